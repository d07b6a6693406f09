"""Mobile architectures adapted to 32x32: MobileNetV2 (Sandler et al. 2018) and ShuffleNetV2
(Ma et al. 2018). The CIFAR adaptation keeps the early layers at full resolution (stride 1 stem,
no max-pool) so the network ends at 4x4 rather than 1x1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distilgan.errors import UserError
from distilgan.models.pretrained import register_to_config
from distilgan.models.classifiers.base import DEFAULT_MEAN, DEFAULT_STD, Classifier, conv_bn


def _round_channels(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` without dropping more than 10% (as the paper's code)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; residual when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn(c_in, hidden, 1))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, c_out, 1, relu=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


# (expansion, channels, blocks, stride); strides of the first two stages are 1 for 32x32 inputs
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(Classifier):
    @register_to_config
    def __init__(
        self,
        width: float = 1.0,
        dropout: float = 0.0,
        num_classes: int = 10,
        resolution: int = 32,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, resolution, mean, std, class_names)
        if not width > 0:
            raise UserError(f"MobileNetV2 width must be > 0, got {width}")
        c_in = _round_channels(32 * width)
        layers: list[nn.Module] = [conv_bn(3, c_in, 3, 1)]
        for expansion, channels, blocks, stride in MOBILENETV2_STAGES:
            c_out = _round_channels(channels * width)
            for i in range(blocks):
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expansion))
                c_in = c_out
        last = _round_channels(1280 * max(1.0, width))
        layers.append(conv_bn(c_in, last, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(self.dropout(out))


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split channels, transform one half, concat, shuffle. Stride 2: both halves see
    the full input (one depthwise-strided, one through the bottleneck), doubling the channels."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = c_out // 2
        if stride == 1 and c_in != c_out:
            raise ValueError("a stride-1 shuffle unit keeps its channel count")
        source = c_in if stride > 1 else branch
        if stride > 1:
            self.left = nn.Sequential(conv_bn(c_in, c_in, 3, stride, groups=c_in, relu=False), conv_bn(c_in, branch, 1))
        self.right = nn.Sequential(
            conv_bn(source, branch, 1),
            conv_bn(branch, branch, 3, stride, groups=branch, relu=False),
            conv_bn(branch, branch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, work = x.chunk(2, dim=1)
            out = torch.cat((keep, self.right(work)), dim=1)
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        return channel_shuffle(out)


SHUFFLENETV2_WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}


class ShuffleNetV2(Classifier):
    @register_to_config
    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 10,
        resolution: int = 32,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, resolution, mean, std, class_names)
        if width not in SHUFFLENETV2_WIDTHS:
            raise UserError(f"ShuffleNetV2 width must be one of {sorted(SHUFFLENETV2_WIDTHS)}, got {width}")
        *stage_channels, last = SHUFFLENETV2_WIDTHS[width]
        self.stem = conv_bn(3, 24, 3, 1)
        units: list[nn.Module] = []
        c_in = 24
        for c_out, repeats in zip(stage_channels, (4, 8, 4)):
            units.append(ShuffleUnit(c_in, c_out, 2))
            units += [ShuffleUnit(c_out, c_out, 1) for _ in range(repeats - 1)]
            c_in = c_out
        self.stages = nn.Sequential(*units)
        self.head = conv_bn(c_in, last, 1)
        self.classifier = nn.Linear(last, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.stages(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))
