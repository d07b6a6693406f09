"""What every CIFAR-style classifier shares: class list, input normalisation, save/load.

A classifier's ``forward`` takes NORMALISED float NCHW input, as the original weights expect, so an
exported graph (ONNX, OpenVINO) sees the same tensor the torch model sees. The normalisation lives
in the config (``mean``/``std`` over pixel values in [0, 1]) and is applied by :meth:`normalize`,
which accepts the library's float images in [-1, 1]. From uint8 the path is always
``uint8 -> utils.images.uint8_to_float -> normalize``, i.e. ``(u / 255 - mean) / std``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from distilgan.errors import UserError
from distilgan.models.pretrained import PretrainedMixin

# The shared CIFAR-10 ResNets were trained with these (ImageNet) statistics; zoo models default to them
# too, so every classifier of the project takes the same input.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Classifier(PretrainedMixin, nn.Module):
    """Base class: subclasses decorate ``__init__`` with ``register_to_config`` and build layers after
    ``super().__init__`` (which records the normalised mean, std and class names)."""

    def __init__(
        self,
        num_classes: int = 10,
        resolution: int = 32,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise UserError(f"mean/std must be 3 values each with std > 0, got {list(mean)} / {list(std)}")
        if class_names is not None and len(class_names) != num_classes:
            raise UserError(f"{len(class_names)} class names given for {num_classes} classes (give one per class)")
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.channels = 3
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        names = class_names or (CIFAR10_CLASSES if num_classes == 10 else [str(i) for i in range(num_classes)])
        self.class_names = [str(n) for n in names]
        self._config_override(**self.base_config())

    def base_config(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "mean": self.mean,
            "std": self.std,
            "class_names": self.class_names,
        }

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Float NCHW in [-1, 1] -> the normalised input ``forward`` expects."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return ((images + 1.0) * 0.5 - mean) / std

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> normalised float32 NCHW (numpy), the one path for every image source."""
        from distilgan.utils.images import nhwc_to_nchw, uint8_to_float

        images = np.asarray(images)
        expected = (self.resolution, self.resolution, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise UserError(
                f"images are {images.dtype} {tuple(images.shape)}, the classifier expects uint8 (N, {expected[0]}, "
                f"{expected[1]}, 3) (resize the images or pick a classifier trained at that resolution)"
            )
        x = nhwc_to_nchw(uint8_to_float(images))
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return ((x + 1.0) * 0.5 - mean) / std

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """uint8 NHWC -> int64 predicted classes, in eval mode on the model's device."""
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(self.preprocess(images[start : start + batch_size])).to(device)
            out.append(self(x).argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """conv (no bias) + BN (+ ReLU): the unit most of the zoo is made of."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
