"""Tiny class-conditional generators exported as ONNX / TorchScript teachers for tests.

Other test files import these to get a real teacher file in ``tmp_path`` in well under a second:

    from tests._teacher_fixtures import make_onnx_teacher, make_torchscript_teacher
    module = make_onnx_teacher(tmp_path / "t.onnx", z_dim=8, num_classes=3, resolution=8)
    images = module(torch.from_numpy(z), torch.from_numpy(labels))  # the reference numbers

The module is deterministic (weights drawn from ``seed``) and returns NCHW images in
``output_range`` (default [-1, 1]); the returned module is the one that was exported.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn


class TinyTeacher(nn.Module):
    """z + class embedding -> linear -> 4x4 features -> nearest upsample -> tanh, scaled to a range.

    With ``label_encoding="onehot"`` the second input is a float (N, num_classes) one-hot matrix.
    With ``nhwc=True`` the output is channels-last (N, H, W, C).
    """

    def __init__(
        self,
        z_dim: int = 8,
        num_classes: int = 3,
        resolution: int = 8,
        channels: int = 3,
        label_encoding: str = "int",
        output_range: Sequence[float] = (-1.0, 1.0),
        nhwc: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if resolution % 4:
            raise ValueError("resolution must be a multiple of 4")
        self.z_dim, self.num_classes, self.resolution, self.channels = z_dim, num_classes, resolution, channels
        self.onehot = label_encoding == "onehot"
        self.nhwc = nhwc
        self.low, self.high = float(output_range[0]), float(output_range[1])
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(num_classes, z_dim, generator=gen))
        self.weight = nn.Parameter(torch.randn(z_dim, channels * 16, generator=gen) / z_dim**0.5)
        self.bias = nn.Parameter(torch.randn(channels * 16, generator=gen) * 0.1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.onehot:
            cond = labels.to(z.dtype) @ self.embed
        else:
            cond = self.embed[labels]
        x = (z + cond) @ self.weight + self.bias
        x = x.view(-1, self.channels, 4, 4)
        x = nn.functional.interpolate(x, scale_factor=float(self.resolution // 4), mode="nearest")
        x = torch.tanh(x)
        x = self.low + (x + 1.0) * (0.5 * (self.high - self.low))
        if self.nhwc:
            x = x.permute(0, 2, 3, 1)
        return x


def example_inputs(module: TinyTeacher, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(batch, module.z_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(batch) % module.num_classes
    if module.onehot:
        return z, nn.functional.one_hot(labels, module.num_classes).float()
    return z, labels


def make_onnx_teacher(
    path: str | os.PathLike,
    z_dim: int = 8,
    num_classes: int = 3,
    resolution: int = 8,
    label_encoding: str = "int",
    channels: int = 3,
    output_range: Sequence[float] = (-1.0, 1.0),
    nhwc: bool = False,
    fixed_batch: int | None = None,
    input_names: Sequence[str] = ("z", "c"),
    output_name: str = "img",
    seed: int = 0,
) -> TinyTeacher:
    """Export a TinyTeacher to ONNX at ``path``; dynamic batch unless ``fixed_batch`` is given."""
    module = TinyTeacher(z_dim, num_classes, resolution, channels, label_encoding, output_range, nhwc, seed).eval()
    inputs = example_inputs(module, fixed_batch or 2)
    dynamic = None
    if fixed_batch is None:
        dynamic = {input_names[0]: {0: "batch"}, input_names[1]: {0: "batch"}, output_name: {0: "batch"}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            input_names=list(input_names),
            output_names=[output_name],
            dynamic_axes=dynamic,
            opset_version=17,
        )
    return module


def make_torchscript_teacher(
    path: str | os.PathLike,
    z_dim: int = 8,
    num_classes: int = 3,
    resolution: int = 8,
    label_encoding: str = "int",
    channels: int = 3,
    output_range: Sequence[float] = (-1.0, 1.0),
    with_attributes: bool = True,
    seed: int = 0,
) -> TinyTeacher:
    """Script a TinyTeacher and save it at ``path``.

    ``with_attributes=False`` traces instead, so the file carries no ``z_dim``/``num_classes``/
    ``resolution`` attributes and the adapter must be told or probe.
    """
    module = TinyTeacher(z_dim, num_classes, resolution, channels, label_encoding, output_range, False, seed).eval()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if with_attributes:
        compiled = torch.jit.script(module)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = torch.jit.trace(module, example_inputs(module))
    compiled.save(str(path))
    return module
