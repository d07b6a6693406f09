"""VGG-11 / VGG-16 with BatchNorm for 32x32 inputs (Simonyan & Zisserman 2015, BN variant).

Five 2x2 max-pools take 32x32 to 1x1, so the classifier head is a single Linear(512, classes)
instead of ImageNet's three 4096-wide layers (the usual CIFAR adaptation). ``width`` scales every
layer's channels (x0.25 trains ~10x faster, for CPU-only machines).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distilgan.errors import UserError
from distilgan.models.pretrained import register_to_config
from distilgan.models.classifiers.base import DEFAULT_MEAN, DEFAULT_STD, Classifier, conv_bn

# channels per conv; "M" is a 2x2 max-pool
VGG_LAYOUTS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(Classifier):
    @register_to_config
    def __init__(
        self,
        depth: int = 11,
        width: float = 1.0,
        num_classes: int = 10,
        resolution: int = 32,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, resolution, mean, std, class_names)
        if depth not in VGG_LAYOUTS:
            raise UserError(f"VGG depth must be one of {sorted(VGG_LAYOUTS)}, got {depth}")
        if not width > 0:
            raise UserError(f"VGG width must be > 0, got {width}")
        layers: list[nn.Module] = []
        c_in = 3
        for item in VGG_LAYOUTS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = max(8, int(round(int(item) * width)))
                layers.append(conv_bn(c_in, c_out))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        # adaptive pool keeps other resolutions (e.g. 64x64) working with the same head
        return self.classifier(nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))
