"""A latent encoder E(x, y) -> z: the fast, approximate inversion of a class-conditional generator.

Trained on the generator's own (z, y, x) samples (a distillation set holds exactly those), so it
needs no gradient of the generator and works for any teacher, ONNX included. It answers in one
forward pass what the optimisation in ``distilgan invert`` answers in hundreds of generator passes,
and gives that optimisation its starting point (the encoder-then-optimise recipe of in-domain GAN
inversion). The class of the image is an input: an edit knows its source class.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from distilgan.errors import UserError
from distilgan.models.pretrained import PretrainedMixin, register_to_config


class LatentEncoder(PretrainedMixin, nn.Module):
    """(images (N, C, H, W) in [-1, 1], labels (N,) long) -> z (N, z_dim).

    Stride-2 conv blocks (BatchNorm, LeakyReLU) from the image and one-hot class planes down to a 4x4
    map, then one linear layer to z. ``z_distribution`` / ``teacher_fingerprint`` record which
    generator's latent space it maps into.
    """

    @register_to_config
    def __init__(
        self,
        z_dim: int = 128,
        num_classes: int = 10,
        resolution: int = 32,
        channels: int = 3,
        ndf: int = 64,
        class_names: Sequence[str] | None = None,
        teacher_fingerprint: str | None = None,
        z_distribution: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if min(z_dim, num_classes, channels, ndf) < 1:
            raise UserError("z_dim, num_classes, channels and ndf must be >= 1")
        if resolution < 8 or resolution & (resolution - 1):
            raise UserError(f"the encoder takes a power-of-two resolution >= 8, got {resolution}")
        self.z_dim, self.num_classes, self.resolution, self.channels = z_dim, num_classes, resolution, channels
        self.class_names = list(class_names) if class_names is not None else None
        layers: list[nn.Module] = [nn.Conv2d(channels + num_classes, ndf, 3, 1, 1), nn.LeakyReLU(0.2)]
        width, side = ndf, resolution
        while side > 4:  # halve down to 4x4, doubling the width up to 8 * ndf
            wider = min(2 * width, 8 * ndf)
            layers += [nn.Conv2d(width, wider, 4, 2, 1, bias=False), nn.BatchNorm2d(wider), nn.LeakyReLU(0.2)]
            width, side = wider, side // 2
        self.features = nn.Sequential(*layers)
        self.to_z = nn.Linear(width * 16, z_dim)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        planes = nn.functional.one_hot(labels.long(), self.num_classes).to(images.dtype)
        planes = planes[:, :, None, None].expand(-1, -1, images.shape[2], images.shape[3])
        return self.to_z(torch.flatten(self.features(torch.cat([images, planes], dim=1)), 1))
