"""Image-to-image students for edit distillation: a U-Net translator and a conditional PatchGAN critic.

A latent-space class edit of a class-conditional GAN (same z, class A -> class B) is slow: invert or
sample, then run the big generator twice. The student replaces it with one feed-forward pass on the
image, in the spirit of pix2pix (Isola et al. 2017): an encoder-decoder with skip connections, trained
against a discriminator that judges (input, output) pairs patch by patch.

UNetTranslator, defaults at 32x32 RGB (ngf 32, depth 3 = down to 4x4):

    [image (C) ++ one-hot edit planes (E, only when num_edits > 1)]
    stem   conv3x3 -> ngf                                         32x32   skip 0
    down i conv3x3 stride 2 -> w_i, conv3x3 (w_i = ngf * 2**i, at most max_width)   skip i
    bottleneck  + learned edit embedding (E > 1), conv3x3          4x4
    up i   nearest x2, concat skip i-1, conv3x3 -> w_{i-1}, conv3x3
    out    conv3x3 -> C, tanh

Every conv but the stem and the output is followed by the norm and an activation (LeakyReLU 0.2 going
down, ReLU going up). ``separable`` makes those convs depthwise 3x3 + pointwise 1x1 (MobileNet's
factorisation: about 8x fewer multiplies at these widths). Upsampling is nearest + conv rather than a
transposed conv, which leaves checkerboard patterns (Odena et al. 2016). Shapes come from the config
alone and nothing branches on tensor values, so the graph exports to ONNX as is and BatchNorm folds
into the preceding conv for INT8.

PatchDiscriminator: sees concat(input, output[, edit planes]); ``n_layers`` stride-2 4x4 convs, one
stride-1 4x4 conv, then a stride-1 4x4 conv to one logit per patch; spectral norm and LeakyReLU 0.2,
no BatchNorm (its activations feed the feature-matching L1, which batch statistics would make depend
on the rest of the batch). Default n_layers 2: at 32x32 a 6x6 map of logits, each seeing 34x34 input
pixels (receptive_field()). pix2pix's n_layers 3 (70x70 patches) would leave 2x2 logits that each see
the whole 32x32 image: an image-level critic again.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distilgan.errors import UserError
from distilgan.models.pretrained import PretrainedMixin, register_to_config
from distilgan.models.student import _ClassCondition, _initialised
from distilgan.utils.edits import EditLookup

NORMS = ("batch", "instance", "none")


def _check_edits(
    num_edits: int, edit_names: Sequence[str] | None, edits: Sequence[Mapping[str, Any]] | None
) -> tuple[list[str] | None, list[dict[str, Any]] | None]:
    """Checked (edit names, edit records); names default to the records' names."""
    if num_edits < 1:
        raise UserError(f"num_edits must be >= 1, got {num_edits}")
    records = None
    if edits is not None:
        records = []
        for i, record in enumerate(edits):
            if not isinstance(record, Mapping):
                raise UserError(f"edits[{i}] is a {type(record).__name__}, not a record {{name, source, target}}")
            record = dict(record)
            if "name" not in record:
                if "source" not in record or "target" not in record:
                    raise UserError(f"edits[{i}] has no name and no source/target (give {{name, source, target}})")
                record["name"] = f"{record['source']}:{record['target']}"
            records.append(record)
        if len(records) != num_edits:
            raise UserError(f"{len(records)} edit records for num_edits {num_edits} (give one record per edit)")
    names = None
    if edit_names is not None:
        names = [str(name) for name in edit_names]
    elif records is not None:
        names = [str(record["name"]) for record in records]
    if names is not None:
        if len(names) != num_edits:
            raise UserError(f"{len(names)} edit names for num_edits {num_edits} (give one name per edit)")
        if len(set(names)) != len(names):
            raise UserError(f"edit names are not unique: {names}")
        if records is not None and names != [str(r["name"]) for r in records]:
            raise UserError(f"edit_names {names} differ from the edit records' names (give one or make them agree)")
    return names, records


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _conv_block(c_in: int, c_out: int, stride: int, separable: bool, norm: str, act: nn.Module) -> nn.Sequential:
    """3x3 conv (or depthwise 3x3 + pointwise 1x1) -> norm -> activation; no bias before a norm (it
    would be cancelled by the norm's own shift)."""
    bias = norm == "none"
    if separable:
        conv: list[nn.Module] = [nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
                                 nn.Conv2d(c_in, c_out, 1, bias=bias)]
    else:
        conv = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)]
    return nn.Sequential(*conv, _norm(norm, c_out), act)


class UNetTranslator(EditLookup, PretrainedMixin, nn.Module):
    """images (N, C, H, W) in [-1, 1] + edits (N,) long (or (N, num_edits) float) -> (N, C, H, W) in [-1, 1].

    ``edits`` may be None when ``num_edits`` is 1. ``edits`` (the pair set's records {name, source,
    target}) and ``class_names`` (the teacher's classes) are provenance, and let ``edit_index``
    understand "automobile->truck" or "truck".
    """

    @register_to_config
    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        ngf: int = 32,
        depth: int | None = None,
        separable: bool = False,
        norm: str = "batch",
        num_edits: int = 1,
        edit_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        edits: Sequence[Mapping[str, Any]] | None = None,
        max_width: int | None = None,
    ) -> None:
        super().__init__()
        if depth is None:  # down to a 4x4 bottleneck
            if resolution < 8 or resolution & (resolution - 1):
                raise UserError(f"translator resolution {resolution} needs a power of two >= 8 (or give depth, with resolution divisible by 2**depth)")
            depth = int(math.log2(resolution)) - 2
        elif depth < 1 or resolution % (1 << depth):
            raise UserError(f"translator depth {depth} does not fit resolution {resolution} (use depth >= 1 with resolution divisible by 2**depth)")
        if norm not in NORMS:
            raise UserError(f"unknown norm '{norm}' (use one of {', '.join(NORMS)})")
        if min(channels, ngf) < 1:
            raise UserError("channels and ngf must be >= 1")
        max_width = 8 * ngf if max_width is None else int(max_width)
        if max_width < ngf:
            raise UserError(f"max_width {max_width} is below ngf {ngf} (give max_width >= ngf)")
        bottom = resolution >> depth
        if norm == "instance" and bottom < 2:
            raise UserError(f"instance norm needs a bottleneck of at least 2x2, depth {depth} leaves {bottom}x{bottom} (use a smaller depth)")
        names, records = _check_edits(num_edits, edit_names, edits)
        self.resolution, self.channels, self.ngf, self.depth = resolution, channels, ngf, depth
        self.separable, self.norm, self.num_edits = bool(separable), norm, num_edits
        self.edit_names = names or [str(i) for i in range(num_edits)]
        self.edits = records
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.widths = [min(ngf << i, max_width) for i in range(depth + 1)]
        self._config_override(depth=depth, max_width=max_width, separable=self.separable, edit_names=names,
                              edits=records, class_names=self.class_names)

        conditioned = num_edits > 1
        w = self.widths
        down, up = nn.LeakyReLU(0.2), nn.ReLU()
        self.condition = _ClassCondition(num_edits) if conditioned else None
        self.stem = _conv_block(channels + (num_edits if conditioned else 0), w[0], 1, False, norm, down)
        self.down = nn.ModuleList(
            nn.Sequential(_conv_block(w[i - 1], w[i], 2, separable, norm, down),
                          _conv_block(w[i], w[i], 1, separable, norm, down))
            for i in range(1, depth + 1)
        )
        # one vector per edit added to the bottleneck: the edit also steers the global content, not
        # only what the input planes reach through the first convs
        self.edit_embedding = nn.Linear(num_edits, w[depth], bias=False) if conditioned else None
        self.bottleneck = _conv_block(w[depth], w[depth], 1, separable, norm, up)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up = nn.ModuleList(
            nn.Sequential(_conv_block(w[i] + w[i - 1], w[i - 1], 1, separable, norm, up),
                          _conv_block(w[i - 1], w[i - 1], 1, separable, norm, up))
            for i in range(depth, 0, -1)
        )
        self.to_image = nn.Sequential(nn.Conv2d(w[0], channels, 3, 1, 1), nn.Tanh())

    def _check_input(self, images: torch.Tensor) -> None:
        # Shapes only (never values), and skipped while tracing: export records no Python checks.
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return
        expected = (self.channels, self.resolution, self.resolution)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise UserError(f"images of shape {tuple(images.shape)} given; this translator takes (N, {', '.join(map(str, expected))}) (resize or convert them)")

    def forward(self, images: torch.Tensor, edits: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(images)
        x = images
        onehot = None
        if self.condition is not None:
            if edits is None:
                raise UserError(f"this translator does {self.num_edits} edits ({', '.join(self.edit_names)}); pass edits (N,)")
            onehot = self.condition(edits, images.dtype)
            side = self.resolution
            planes = onehot[:, :, None, None].expand(-1, -1, side, side)
            x = torch.cat([x, planes], dim=1)
        x = self.stem(x)
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        if self.edit_embedding is not None:
            x = x + self.edit_embedding(onehot)[:, :, None, None]
        x = self.bottleneck(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([self.upsample(x), skip], dim=1))
        return self.to_image(x)


class PatchDiscriminator(PretrainedMixin, nn.Module):
    """(inputs (N, C, H, W), outputs (N, C, H, W), edits (N,) | None) -> (logits (N, 1, h, w), features).

    features: the activation after each LeakyReLU block (n_layers + 1 of them), for the
    discriminator-feature L1 term.
    """

    # training: channels-last suits a BatchNorm-free conv stack on the CPU (as the DiStyleGAN D)
    prefers_channels_last = True

    @register_to_config
    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        ndf: int = 64,
        n_layers: int = 2,
        num_edits: int = 1,
    ) -> None:
        super().__init__()
        if n_layers < 1 or min(resolution, channels, ndf) < 1:
            raise UserError("n_layers, resolution, channels and ndf must be >= 1")
        if num_edits < 1:
            raise UserError(f"num_edits must be >= 1, got {num_edits}")
        # n_layers halvings, then two stride-1 4x4 convs that each take one pixel off the side
        if resolution % (1 << n_layers) or (resolution >> n_layers) < 3:
            raise UserError(f"a {n_layers}-layer PatchDiscriminator needs a resolution divisible by {1 << n_layers} "
                            f"and at least {3 << n_layers} (got {resolution}; use fewer n_layers)")
        self.resolution, self.channels, self.ndf = resolution, channels, ndf
        self.n_layers, self.num_edits = n_layers, num_edits
        self.condition = _ClassCondition(num_edits) if num_edits > 1 else None
        widths = [2 * channels + (num_edits if num_edits > 1 else 0)] + [ndf * min(1 << i, 8) for i in range(n_layers + 1)]
        strides = [2] * n_layers + [1]
        self.blocks = nn.ModuleList(
            nn.Sequential(spectral_norm(_initialised(nn.Conv2d(c_in, c_out, 4, stride, 1))), nn.LeakyReLU(0.2))
            for c_in, c_out, stride in zip(widths[:-1], widths[1:], strides)
        )
        self.output = spectral_norm(_initialised(nn.Conv2d(widths[-1], 1, 4, 1, 1)))

    def patch_map(self) -> int:
        """Side of the logit map at this resolution."""
        return (self.resolution >> self.n_layers) - 2

    def receptive_field(self) -> int:
        """Input pixels (per side) that one logit sees: r_in = (r_out - 1) * stride + kernel, walked
        back from the logit through every 4x4 conv."""
        field = 1
        for stride in reversed([2] * self.n_layers + [1, 1]):
            field = (field - 1) * stride + 4
        return field

    def forward(
        self, inputs: torch.Tensor, outputs: torch.Tensor, edits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.cat([inputs, outputs], dim=1)
        if self.condition is not None:
            if edits is None:
                raise UserError(f"this discriminator is conditioned on {self.num_edits} edits; pass edits (N,)")
            onehot = self.condition(edits, x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.output(x), features
