"""BigGAN-style class-conditional generator and projection discriminator (the CIFAR-10 teacher).

distilgan trains its own CIFAR-10 teacher, so the design is the proven CIFAR BigGAN (Brock et al.
2019; BigGAN-PyTorch's C10 config, also used by DiffAugment-biggan-cifar and StudioGAN), with the
defaults of StudioGAN's ``big_resnet`` for the conditioning (shared embedding + hierarchical z):

Generator (z_dim 128, ch 256, 32x32, 3 residual up-blocks at constant width ``ch``):

    z (128) = 4 chunks of 32 (hierarchical): chunk 0 -> SN-Linear -> ch x 4 x 4
    cond_i = [shared_embedding(y) (128), chunk i (32)]  for up-block i = 1..3
    GBlock: cBN -> ReLU -> up x2 -> SN-conv3x3 -> cBN -> ReLU -> SN-conv3x3, + SN-conv1x1(up x2 (x))
    BN -> ReLU -> SN-conv3x3 (ch -> 3) -> tanh

Conditional BN: BatchNorm without affine, then ``x * (1 + gain(cond)) + bias(cond)`` where gain and
bias are SN-Linear maps of the condition vector (BigGAN's "shared embedding" design: one class
embedding for the whole net, one small linear per BN). ``shared_dim=0`` gives BigGAN-PyTorch's CIFAR
variant instead: the condition is the one-hot label, i.e. one embedding table per BN.

Discriminator (ch 256): optimised DBlock (conv3x3 -> ReLU -> conv3x3 -> avgpool, shortcut avgpool ->
conv1x1) to 16x16, pre-activation DBlock with pooling to 8x8, two DBlocks at 8x8 without pooling,
ReLU, global sum pooling, ``logit = linear(h) + <SN-embedding(y), h>`` (projection discriminator,
Miyato & Koyama 2018). Spectral norm everywhere, orthogonal init.

Speed notes (same function, fewer MACs): nearest upsampling and average pooling commute with a 1x1
conv, so shortcuts run their 1x1 conv at the lower resolution. forward has no data-dependent Python
control flow and no host syncs, so it runs under torch.compile, bf16 autocast and channels_last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distilgan.errors import UserError
from distilgan.models.pretrained import PretrainedMixin, register_to_config
from distilgan.models.space import GeneratorSpace
from distilgan.models.student import _check_classes, _check_resolution

# BigGAN's spectral-norm epsilon (the default 1e-12 lets sigma of a near-zero matrix blow up in bf16)
SN_EPS = 1e-6
# bottom of the generator / top of the discriminator
BASE_SIDE = 4
D_TOP_SIDE = 8


def _sn(module: nn.Module) -> nn.Module:
    """Orthogonal init (BigGAN), then spectral norm; the order matters (SN's u/v come from the weight)."""
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module, eps=SN_EPS)


def _conv3x3(c_in: int, c_out: int) -> nn.Module:
    return _sn(nn.Conv2d(c_in, c_out, 3, 1, 1))


def _conv1x1(c_in: int, c_out: int) -> nn.Module:
    return _sn(nn.Conv2d(c_in, c_out, 1, 1, 0))


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ConditionalBatchNorm(nn.Module):
    """BatchNorm2d without affine; per-sample gain and bias from a linear map of the condition."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = _sn(nn.Linear(cond_dim, channels))
        self.bias = _sn(nn.Linear(cond_dim, channels))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # "1 +" keeps the initial gain near one while the linear starts from orthogonal weights
        gain = 1.0 + self.gain(cond)
        bias = self.bias(cond)
        return self.norm(x) * gain[:, :, None, None] + bias[:, :, None, None]


class GBlock(nn.Module):
    """cBN -> ReLU -> up x2 -> conv3x3 -> cBN -> ReLU -> conv3x3, plus a learned 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm(c_in, cond_dim)
        self.conv1 = _conv3x3(c_in, c_out)
        self.bn2 = ConditionalBatchNorm(c_out, cond_dim)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = _conv1x1(c_in, c_out)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = _up2(F.relu(self.bn1(x, cond)))
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + _up2(self.shortcut(x))  # 1x1 conv before upsampling: identical, 4x cheaper


class DBlock(nn.Module):
    """[ReLU ->] conv3x3 -> ReLU -> conv3x3 [-> avgpool], plus a shortcut (1x1 conv when needed).

    ``optimized`` is BigGAN's first block: no activation before the first conv (on raw pixels),
    and the shortcut pools before its 1x1 conv.
    """

    def __init__(self, c_in: int, c_out: int, downsample: bool, optimized: bool = False) -> None:
        super().__init__()
        self.downsample, self.optimized = downsample, optimized
        self.conv1 = _conv3x3(c_in, c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = _conv1x1(c_in, c_out) if (c_in != c_out or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.optimized else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            x = F.avg_pool2d(x, 2)  # pool before the 1x1 conv: identical, 4x cheaper
        if self.shortcut is not None:
            x = self.shortcut(x)
        return h + x


def _class_vectors(labels: torch.Tensor, num_classes: int, table: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for int64 labels; a float (N, num_classes) tensor mixes rows (soft labels)."""
    if labels.is_floating_point():
        return labels.reshape(-1, num_classes).to(table.dtype) @ table
    return F.embedding(labels.long(), table)


class BigGANGenerator(GeneratorSpace, PretrainedMixin, nn.Module):
    """z (N, z_dim) float + labels (N,) long -> images (N, channels, resolution, resolution) in [-1, 1].

    ``z_distribution`` / ``classes`` / ``teacher_fingerprint``: what it was trained on (models/space.py).
    """

    prefers_channels_last = True  # training: NHWC convolutions pay here (1.8x with bf16 on CPU, measured)

    @register_to_config
    def __init__(
        self,
        z_dim: int = 128,
        num_classes: int = 10,
        ch: int = 256,
        resolution: int = 32,
        channels: int = 3,
        shared_dim: int = 128,
        hierarchical: bool = True,
        class_names: Sequence[str] | None = None,
        z_distribution: Mapping[str, Any] | None = None,
        classes: Sequence[int] | None = None,
        teacher_fingerprint: str | None = None,
    ) -> None:
        super().__init__()
        num_blocks = _check_resolution(resolution, 8, "generator") - 2  # 4x4 -> resolution
        if min(z_dim, ch, channels) < 1 or shared_dim < 0:
            raise UserError("z_dim, ch and channels must be >= 1 and shared_dim >= 0")
        if hierarchical and z_dim % (num_blocks + 1):
            raise UserError(
                f"z_dim {z_dim} must split into {num_blocks + 1} equal chunks for a hierarchical "
                f"{resolution}x{resolution} generator (use a multiple of {num_blocks + 1}, or hierarchical=False)"
            )
        self.class_names = _check_classes(num_classes, class_names)
        self.z_dim, self.num_classes, self.ch = z_dim, num_classes, ch
        self.resolution, self.channels = resolution, channels
        self.shared_dim, self.hierarchical = shared_dim, bool(hierarchical)
        self._config_override(hierarchical=self.hierarchical, class_names=self.class_names,
                              **self._space(z_distribution, classes, teacher_fingerprint))

        self.chunk = z_dim // (num_blocks + 1) if hierarchical else 0
        # shared_dim 0: the condition is the one-hot label (a fixed identity "embedding"), so every
        # cBN linear is in effect its own class-embedding table, as in BigGAN-PyTorch's CIFAR config.
        if shared_dim:
            self.shared = nn.Embedding(num_classes, shared_dim)
            nn.init.orthogonal_(self.shared.weight)
        else:
            self.register_buffer("eye", torch.eye(num_classes), persistent=False)
        cond_dim = (shared_dim or num_classes) + self.chunk
        self.linear = _sn(nn.Linear(z_dim - num_blocks * self.chunk, ch * BASE_SIDE * BASE_SIDE))
        self.blocks = nn.ModuleList(GBlock(ch, ch, cond_dim) for _ in range(num_blocks))
        self.out_bn = nn.BatchNorm2d(ch)
        self.to_image = _conv3x3(ch, channels)

    def class_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        table = self.shared.weight if self.shared_dim else self.eye
        return _class_vectors(labels, self.num_classes, table)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = self.class_embedding(labels).to(z.dtype)
        if self.hierarchical:
            chunks = torch.split(z, self.chunk, dim=1)
            first, conds = chunks[0], [torch.cat([y, c], dim=1) for c in chunks[1:]]
        else:
            first, conds = z, [y] * len(self.blocks)
        x = self.linear(first).view(-1, self.ch, BASE_SIDE, BASE_SIDE)
        for block, cond in zip(self.blocks, conds):
            x = block(x, cond)
        return torch.tanh(self.to_image(F.relu(self.out_bn(x))))


class BigGANDiscriminator(PretrainedMixin, nn.Module):
    """(images (N, C, H, W) in [-1, 1], labels (N,) long) -> logits (N,).

    ``forward(images, labels, return_features=True)`` returns ``(logits, [block outputs])``, the
    same shape of answer as the student's discriminator (for feature-matching losses).
    """

    prefers_channels_last = True

    @register_to_config
    def __init__(self, num_classes: int = 10, ch: int = 256, resolution: int = 32, channels: int = 3) -> None:
        super().__init__()
        num_down = _check_resolution(resolution, 16, "discriminator") - 3  # resolution -> 8x8
        _check_classes(num_classes, None)
        if min(ch, channels) < 1:
            raise UserError("ch and channels must be >= 1")
        self.num_classes, self.ch, self.resolution, self.channels = num_classes, ch, resolution, channels

        blocks = [DBlock(channels, ch, downsample=True, optimized=True)]
        blocks += [DBlock(ch, ch, downsample=True) for _ in range(num_down - 1)]
        blocks += [DBlock(ch, ch, downsample=False) for _ in range(2)]  # two more at 8x8, as BigGAN C10
        self.blocks = nn.ModuleList(blocks)
        self.linear = _sn(nn.Linear(ch, 1))
        self.embed = _sn(nn.Embedding(num_classes, ch))

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        h = images
        for block in self.blocks:
            h = block(h)
            features.append(h)
        h = torch.sum(F.relu(h), dim=(2, 3))  # global sum pooling (BigGAN), not mean
        projection = (_class_vectors(labels, self.num_classes, self.embed.weight).to(h.dtype) * h).sum(dim=1)
        logits = self.linear(h).squeeze(1) + projection
        return (logits, features) if return_features else logits
