"""RepVGG (Ding et al. 2021) for 32x32 inputs, with its re-parameterisation for deployment.

Training-time block: ReLU(BN(conv3x3 x) + BN(conv1x1 x) + BN(x)) (the identity branch only when the
shape is kept). All three branches are linear up to the ReLU, so after training they fold into a
single 3x3 conv with bias: a BN scales its conv's kernel by gamma/sqrt(var+eps) and adds
beta - mean*gamma/sqrt(var+eps); the 1x1 kernel becomes a 3x3 kernel with only its centre set; the
identity is a 3x3 kernel with 1 at the centre of channel i -> i. :meth:`RepVGG.reparameterize`
returns that plain conv-ReLU stack (``deployed=True``), whose outputs equal the training form.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distilgan.errors import UserError
from distilgan.models.pretrained import register_to_config
from distilgan.models.classifiers.base import DEFAULT_MEAN, DEFAULT_STD, Classifier, conv_bn

# variant -> (blocks per stage, width multipliers a (stages 1-3) and b (last stage))
REPVGG_VARIANTS = {"A0": ((1, 2, 4, 14, 1), 0.75, 2.5), "A1": ((1, 2, 4, 14, 1), 1.0, 2.5), "B0": ((1, 4, 6, 16, 1), 1.0, 2.5)}
# CIFAR: the stem and first stage keep 32x32; three stride-2 stages end at 4x4
STAGE_STRIDES = (1, 1, 2, 2, 2)


def _fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, deployed: bool) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride, self.deployed = c_in, c_out, stride, deployed
        if deployed:
            self.fused = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=True)
            return
        self.dense = conv_bn(c_in, c_out, 3, stride, relu=False)
        self.pointwise = conv_bn(c_in, c_out, 1, stride, relu=False)
        self.identity = nn.BatchNorm2d(c_in) if c_in == c_out and stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return F.relu(self.fused(x))
        out = self.dense(x) + self.pointwise(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return F.relu(out)

    @torch.no_grad()
    def fused_kernel_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the three branches (eval-mode BN)."""
        kernel, bias = _fuse_bn(self.dense[0].weight, self.dense[1])
        k1, b1 = _fuse_bn(self.pointwise[0].weight, self.pointwise[1])
        kernel, bias = kernel + F.pad(k1, (1, 1, 1, 1)), bias + b1
        if self.identity is not None:
            eye = torch.zeros(self.c_in, self.c_in, 3, 3, dtype=kernel.dtype, device=kernel.device)
            eye[torch.arange(self.c_in), torch.arange(self.c_in), 1, 1] = 1.0
            ki, bi = _fuse_bn(eye, self.identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias


class RepVGG(Classifier):
    @register_to_config
    def __init__(
        self,
        variant: str = "A0",
        width: float = 1.0,
        deployed: bool = False,
        num_classes: int = 10,
        resolution: int = 32,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, resolution, mean, std, class_names)
        if variant not in REPVGG_VARIANTS:
            raise UserError(f"RepVGG variant must be one of {', '.join(REPVGG_VARIANTS)}, got {variant!r}")
        if not width > 0:
            raise UserError(f"RepVGG width must be > 0, got {width}")
        self._config_override(deployed=bool(deployed))
        depths, a, b = REPVGG_VARIANTS[variant]
        a, b = a * width, b * width  # a narrower model of the same depth (CPU-sized CIFAR runs)
        widths = (min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b))
        blocks: list[nn.Module] = []
        c_in = 3
        for depth, width, stride in zip(depths, widths, STAGE_STRIDES):
            for i in range(depth):
                blocks.append(RepVGGBlock(c_in, width, stride if i == 0 else 1, deployed))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(c_in, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(self.blocks(x), 1).flatten(1))

    @torch.no_grad()
    def reparameterize(self) -> "RepVGG":
        """A new ``deployed=True`` model: every block one 3x3 conv + ReLU, same outputs."""
        if self.config["deployed"]:
            return self
        kwargs = {k: v for k, v in self.config.items() if k != "architecture"}
        plain = RepVGG(**{**kwargs, "deployed": True}).to(next(self.parameters()).device)
        for train_block, plain_block in zip(self.blocks, plain.blocks):
            kernel, bias = train_block.fused_kernel_and_bias()
            plain_block.fused.weight.copy_(kernel)
            plain_block.fused.bias.copy_(bias)
        plain.linear.load_state_dict(self.linear.state_dict())
        plain.metadata = {**self.metadata, "reparameterized": True}
        return plain.eval()
