"""Quantisation-aware training (QAT) of the student, matching OpenVINO/NNCF's INT8 scheme.

Why our own fake quantisation: NNCF's PyTorch QAT path compiles a C++ extension at first use
(``quantized_functions_cpu``); on this 2-core machine that timed out after NNCF's 60 s limit, and it
needs a compiler on every user's machine. The scheme is small enough to mirror directly:

* weights of every Linear/Conv2d: int8 symmetric per output channel, narrow range [-127, 127],
  scale = max|w_c| / 127 (recomputed each step, so it follows the weights). Per-channel scales make
  this the same grid before or after BatchNorm is folded into the weights;
* activations, per tensor, where NNCF puts its FakeQuantize nodes on this graph: the input of every
  Linear/Conv2d, both inputs of each GLU product (value and sigmoid(gate)), and the GLU output.
  Signed int8 [-128, 127] * amax / 127, or unsigned [0, 255] * max / 255 when the calibrated
  minimum is >= 0 (sigmoid outputs); ranges from min/max calibration, then frozen;
* rounding passes gradients straight through (STE); values clipped by the range get none.

The fake-quantised student is distilled from the FP32 student through the training loop
(finetune.distil: pixel L1, plus the feature L1 of the distill run's discriminator with ``--run``, or
an optional random-conv feature loss without one). Afterwards
the INT8 export keeps the trained scales: traced for ONNX, the quantisers become
QuantizeLinear/DequantizeLinear pairs (``torch.fake_quantize_*``), which OpenVINO reads as
FakeQuantize and runs in INT8 (``distilgan qat --int8 qat``; export.export_model(...,
quantized_model=...)). The default re-quantises the fine-tuned FP32 weights with NNCF instead
(``--int8 nncf``): NNCF's ranges plus bias correction beat our min/max ranges on the students
measured so far (docs/deploy.md).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from distilgan.deploy.finetune import distil, input_batch, l1_to
from distilgan.utils.latent import model_z_distribution

QAT_CALIBRATION_STREAM = 7005


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 (narrow range) with a straight-through gradient."""
    amax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-8)
    if torch.onnx.is_in_onnx_export():
        # QuantizeLinear/DequantizeLinear per channel. ONNX only knows [-128, 127]; weights lie within
        # +-127 steps by construction, so the narrow grid is unchanged.
        zero = torch.zeros(len(amax), dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, amax / 127, zero, 0, -128, 127)
    scale = (amax / 127).view(-1, *([1] * (weight.dim() - 1)))
    quantized = torch.clamp(torch.round(weight / scale), -127, 127) * scale
    return weight + (quantized - weight).detach()


class ActQuant(nn.Module):
    """Per-tensor activation fake quantiser; modes: "calibrate" (track min/max), "quant", "off"."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))
        self.mode = "calibrate"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "calibrate":
            self.low = torch.minimum(self.low, x.detach().min())
            self.high = torch.maximum(self.high, x.detach().max())
            return x
        if self.mode == "off":
            return x
        if self.low >= 0:  # unsigned: [0, 255] * max / 255
            scale = self.high.clamp_min(1e-8) / 255
            q_low, q_high = 0.0, 255.0
        else:  # signed symmetric: [-128, 127] * amax / 127
            scale = torch.maximum(self.high, -self.low).clamp_min(1e-8) / 127
            q_low, q_high = -128.0, 127.0
        if torch.onnx.is_in_onnx_export():  # QuantizeLinear/DequantizeLinear (OpenVINO: FakeQuantize)
            return torch.fake_quantize_per_tensor_affine(x, float(scale), 0, int(q_low), int(q_high))
        clipped = torch.clamp(x, q_low * scale, q_high * scale)
        return clipped + (torch.round(clipped / scale) * scale - clipped).detach()


class QuantLayer(nn.Module):
    """A Linear or Conv2d with fake-quantised input and weights (keeps the original as ``layer``)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.input_quant = ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        weight = fake_quant_weight(self.layer.weight)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


class QuantGLU(nn.Module):
    """GLU with fake-quantised value, sigmoid(gate) and product, as NNCF quantises the Multiply."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.value_quant, self.gate_quant, self.output_quant = ActQuant(), ActQuant(), ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=self.dim)
        return self.output_quant(self.value_quant(value) * self.gate_quant(torch.sigmoid(gate)))


def insert_fake_quant(model: nn.Module, keep_first: bool = False, keep_last: bool = False) -> nn.Module:
    """A deep copy of ``model`` with QuantLayer / QuantGLU in place of Linear, Conv2d and GLU."""
    model = copy.deepcopy(model)
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    skip = set(layers[:1] if keep_first else []) | set(layers[-1:] if keep_last else [])
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, (nn.Linear, nn.Conv2d)) and full not in skip:
                setattr(module, child_name, QuantLayer(child))
            elif isinstance(child, nn.GLU):
                setattr(module, child_name, QuantGLU(child.dim))
    return model


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """The plain model back (same state-dict keys as before insert_fake_quant), as a deep copy."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, QuantLayer):
                setattr(module, child_name, child.layer)
            elif isinstance(child, QuantGLU):
                setattr(module, child_name, nn.GLU(child.dim))
    return model


def set_mode(model: nn.Module, mode: str) -> None:
    for module in model.modules():
        if isinstance(module, ActQuant):
            module.mode = mode


@torch.no_grad()
def calibrate(model: nn.Module, samples: int = 512, batch_size: int = 128, seed: int = 0) -> None:
    set_mode(model, "calibrate")
    model.eval()
    for step in range(max(1, samples // batch_size)):
        model(*input_batch(model, batch_size, step, seed, QAT_CALIBRATION_STREAM))
    set_mode(model, "quant")


class FakeQuantGenerator(nn.Module):
    """A fake-quantised generator as the training loop holds it: the loop's checkpoints
    (RUN/generator, RUN/checkpoints/) get the plain FP32-weight model, loadable as any checkpoint;
    the trained quantiser ranges live in the loop's state/state.pt and in the returned model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for name in ("z_dim", "num_classes", "resolution", "channels", "class_names"):
            setattr(self, name, getattr(model, name))
        self.classes, self.teacher_fingerprint = getattr(model, "classes", None), getattr(model, "teacher_fingerprint", None)
        self.z_distribution = model_z_distribution(model)  # what the loop's grids and metrics sample

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(z, labels)

    def save_pretrained(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        return strip_fake_quant(self.model).save_pretrained(directory, metadata=metadata)


def quantization_aware_training(
    model: nn.Module,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 2e-5,
    seed: int = 0,
    feature_weight: float | None = None,
    calibration_size: int = 512,
    progress: bool = True,
    *,
    discriminator: nn.Module | None = None,
    finetune: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any], nn.Module]:
    """Fine-tune under fake quantisation against the FP32 ``model``.

    Returns (plain FP32-weight model, report, the fake-quantised model): export the last with
    ``export_model(plain, ..., precision="int8", quantized_model=fake_quantised)`` to keep the scales
    it was trained with; NNCF post-training quantisation of ``plain`` would pick other ranges.
    ``discriminator`` (the distill run's D) adds its feature loss; ``finetune`` holds distil()'s
    loop options (run_dir, resume, ema, metrics, options).
    """
    teacher = copy.deepcopy(model).eval()
    student = insert_fake_quant(model)
    calibrate(student, calibration_size, seed=seed)
    report: dict[str, Any] = {"l1_fake_int8_before": l1_to(student, teacher)}
    report["distillation"] = distil(FakeQuantGenerator(student), teacher, steps=steps, batch_size=batch_size, lr=lr,
                                    seed=seed, feature_weight=feature_weight, progress=progress, desc="qat",
                                    discriminator=discriminator, **dict(finetune or {}))
    report["l1_fake_int8_after"] = l1_to(student, teacher)
    plain = strip_fake_quant(student).eval()
    report["l1_fp32_weights_after"] = l1_to(plain, teacher)
    student.eval()
    return plain, report, student
