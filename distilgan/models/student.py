"""DiStyleGAN student generator and discriminator (GSoC 2022 DiStyleGAN, configurable).

Generator, with the reference defaults (z_dim 512, 10 classes, project_dim 128, ngf 256, 32x32 RGB):

    z (512) -> Linear(512, 256, no bias) + BN1d + GLU                  -> 128
    concat one-hot class (10)                                           -> 138
    -> Linear(138, 2*256*4*4, no bias) + BN1d + GLU -> view            -> 256 x 4 x 4
    3 up-blocks [nearest x2, conv3x3(c, 2*(c/2), no bias), BN2d, GLU]   -> 32 x 32 x 32
    conv3x3(32, 3, no bias) + tanh                                      -> 3 x 32 x 32

The up-block conv outputs twice the block's channels so that GLU (which halves them) leaves
``c/2``; with these shapes the generator has exactly 2,054,368 parameters and 115.4 M MACs per
image (the reference's published size; its later variant added 3 residual blocks, which we omit).

Discriminator: four [conv4x4 stride 2 + spectral norm + LeakyReLU 0.2] blocks (ndf, ndf, 2ndf,
4ndf channels) whose outputs are the features of the feature-matching loss; flatten ->
spectral-norm Linear + GLU -> project_dim; concat one-hot class -> Linear -> one logit.

Labels are int64 class indices; a float (N, num_classes) tensor is also accepted as an already
one-hot (or soft) condition.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distilgan.errors import UserError
from distilgan.models.pretrained import PretrainedMixin, register_to_config
from distilgan.models.space import GeneratorSpace


def _init_layer(module: nn.Module) -> None:
    """Reference init: orthogonal conv/linear weights, BN weight ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.orthogonal_(module.weight, 1.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _initialised(module: nn.Module) -> nn.Module:
    # Spectral norm must wrap an already-initialised weight: its power-iteration vectors are
    # computed from the weight when the parametrization is registered.
    _init_layer(module)
    return module


class _SmallMapConv2d(nn.Conv2d):
    """A Conv2d that, while training on the CPU, computes maps of at most 2x2 outputs as unfold + matmul.

    oneDNN runs the last discriminator block (4x4 -> 2x2, 4x4 kernel) ~3x slower than the same
    arithmetic as one matrix product (measured: 498 vs 146 ms forward + backward at batch 512 under
    bf16 autocast on an AMX Xeon), and that block was a quarter of the student's training step.
    Same parameters and state-dict keys as nn.Conv2d; inference, export and other devices use the
    plain convolution. ``matmul_small_maps = False`` turns the path off (benchmarks time both).
    """

    matmul_small_maps = True

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if isinstance(self.padding, str):
            return super()._conv_forward(x, weight, bias)
        side = [(x.shape[i + 2] + 2 * self.padding[i] - self.kernel_size[i]) // self.stride[i] + 1 for i in (0, 1)]
        plain = (not self.matmul_small_maps or not self.training or x.device.type != "cpu"
                 or side[0] * side[1] > 4 or self.groups != 1 or self.padding_mode != "zeros"
                 or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())
        if plain:
            return super()._conv_forward(x, weight, bias)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        columns = nn.functional.unfold(x.to(dtype), self.kernel_size, self.dilation, self.padding, self.stride)
        # One 2-D product (N*L, C*k*k) @ (C*k*k, O): a batched product would expand the weight per sample.
        rows = columns.transpose(1, 2).reshape(-1, columns.shape[1])
        weight_matrix = weight.to(dtype).reshape(self.out_channels, -1).t()
        out = torch.addmm(bias.to(dtype), rows, weight_matrix) if bias is not None else rows @ weight_matrix
        return out.reshape(x.shape[0], side[0], side[1], self.out_channels).permute(0, 3, 1, 2)


def _check_resolution(resolution: int, minimum: int, what: str) -> int:
    if resolution < minimum or resolution & (resolution - 1):
        raise UserError(f"{what} resolution {resolution} is not supported (use a power of two >= {minimum})")
    return int(math.log2(resolution))


def _check_classes(num_classes: int, class_names: Sequence[str] | None) -> list[str] | None:
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    if class_names is None:
        return None
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise UserError(f"{len(names)} class names given for {num_classes} classes (give one name per class)")
    if len(set(names)) != len(names):
        raise UserError(f"class names are not unique: {names}")
    return names


class _ClassCondition(nn.Module):
    """int64 labels (N,) -> one-hot float (N, num_classes); float (N, num_classes) passes through.

    A gather from a non-persistent identity matrix (not F.one_hot) so the graph exports to ONNX
    with plain ops and nothing extra lands in the state dict.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("eye", torch.eye(num_classes), persistent=False)

    def forward(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if labels.is_floating_point():
            return labels.reshape(-1, self.num_classes).to(dtype)
        return self.eye[labels.long()].to(dtype)


class DiStyleGANGenerator(GeneratorSpace, PretrainedMixin, nn.Module):
    """z (N, z_dim) float + labels (N,) long -> images (N, channels, resolution, resolution) in [-1, 1].

    ``z_distribution`` (a ``ZDistribution.to_dict()``; None = normal), ``classes`` (the trained class
    subset in label order; None = all) and ``teacher_fingerprint`` record what it was distilled on.
    """

    # Structured pruning (deploy/prune.py) used to save a subclass under this name; it is now
    # DiStyleGANGenerator(widths=...), and those checkpoints load as such.
    architecture_aliases = ("PrunedDiStyleGANGenerator",)

    @register_to_config
    def __init__(
        self,
        z_dim: int = 512,
        num_classes: int = 10,
        project_dim: int = 128,
        ngf: int = 256,
        resolution: int = 32,
        channels: int = 3,
        class_names: Sequence[str] | None = None,
        z_distribution: Mapping[str, Any] | None = None,
        classes: Sequence[int] | None = None,
        teacher_fingerprint: str | None = None,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        num_up = _check_resolution(resolution, 8, "generator") - 2  # from 4x4
        if ngf % (1 << num_up):
            raise UserError(f"ngf {ngf} must be divisible by {1 << num_up} for {resolution}x{resolution} (each up-block halves it)")
        if min(z_dim, project_dim, channels) < 1:
            raise UserError("z_dim, project_dim and channels must be >= 1")
        # widths: channels at 4x4, then after each up-block; None is the reference's ngf, ngf/2, ...
        full = [ngf >> i for i in range(num_up + 1)]
        chosen = full if widths is None else [int(w) for w in widths]
        if len(chosen) != num_up + 1 or min(chosen) < 1:
            raise UserError(f"widths {chosen} must hold {num_up + 1} positive channel counts (4x4 map, then each up-block)")
        self.class_names = _check_classes(num_classes, class_names)
        self.z_dim, self.num_classes, self.project_dim = z_dim, num_classes, project_dim
        self.ngf, self.resolution, self.channels, self.widths = ngf, resolution, channels, chosen
        # widths are recorded only where they differ from ngf's: ngf stays the one setting of a full model
        self._config_override(class_names=self.class_names, widths=None if chosen == full else chosen,
                              **self._space(z_distribution, classes, teacher_fingerprint))

        self.condition = _ClassCondition(num_classes)
        self.project = nn.Sequential(
            nn.Linear(z_dim, 2 * project_dim, bias=False), nn.BatchNorm1d(2 * project_dim), nn.GLU(1)
        )
        self.fc = nn.Sequential(
            nn.Linear(project_dim + num_classes, 2 * chosen[0] * 4 * 4, bias=False),
            nn.BatchNorm1d(2 * chosen[0] * 4 * 4),
            nn.GLU(1),
        )
        self.up = nn.Sequential(*(self._up_block(a, b) for a, b in zip(chosen[:-1], chosen[1:])))
        self.to_image = nn.Sequential(nn.Conv2d(chosen[-1], channels, 3, 1, 1, bias=False), nn.Tanh())
        self.apply(_init_layer)

    @staticmethod
    def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, 2 * out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * out_channels),
            nn.GLU(1),  # halves channels: 2*out -> out
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        code = torch.cat([self.project(z), self.condition(labels, z.dtype)], dim=1)
        x = self.fc(code).view(-1, self.widths[0], 4, 4)
        return self.to_image(self.up(x))


class DiStyleGANDiscriminator(PretrainedMixin, nn.Module):
    """(images (N, C, H, W) in [-1, 1], labels (N,) long) -> (logits (N,), [f1, f2, f3, f4])."""

    # training: NHWC pays for D (no BatchNorm; 6 % with bf16 on an AMX Xeon, measured), not for G
    prefers_channels_last = True

    @register_to_config
    def __init__(
        self,
        num_classes: int = 10,
        project_dim: int = 128,
        ndf: int = 128,
        resolution: int = 32,
        channels: int = 3,
    ) -> None:
        super().__init__()
        # Four stride-2 blocks need at least 16x16 input to leave a 1x1 map.
        _check_resolution(resolution, 16, "discriminator")
        _check_classes(num_classes, None)
        if min(project_dim, ndf, channels) < 1:
            raise UserError("project_dim, ndf and channels must be >= 1")
        self.num_classes, self.project_dim, self.ndf = num_classes, project_dim, ndf
        self.resolution, self.channels = resolution, channels

        widths = [channels, ndf, ndf, 2 * ndf, 4 * ndf]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                spectral_norm(_initialised(_SmallMapConv2d(c_in, c_out, 4, 2, 1, bias=True))),
                nn.LeakyReLU(0.2),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        final_side = resolution // 16
        self.project = nn.Sequential(
            spectral_norm(_initialised(nn.Linear(4 * ndf * final_side**2, 2 * project_dim, bias=False))),
            nn.GLU(1),
        )
        self.condition = _ClassCondition(num_classes)
        self.output = _initialised(nn.Linear(project_dim + num_classes, 1, bias=False))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        x = images
        for block in self.blocks:
            x = block(x)
            features.append(x)
        h = self.project(torch.flatten(x, 1))
        h = torch.cat([h, self.condition(labels, h.dtype)], dim=1)
        return self.output(h).squeeze(1), features
