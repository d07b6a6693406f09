"""Training precision: fp32, or bf16 autocast (CPU with AMX / AVX-512 BF16, or CUDA), chosen by a probe.

Under bf16 only the forward and backward passes of G and D run in bfloat16 (``torch.autocast``);
weights, gradients, Adam's moments, the EMA copy, the losses and every logged term stay float32
(the objectives cast logits and images to float before a loss). ``auto`` picks bf16 on a CPU whose
flags say it has bf16 hardware (``amx_bf16`` or ``avx512_bf16``) only when a short probe of this
run's own G and D (forward + backward, on copies, at the run's batch size) is faster in bf16; on
CUDA it picks bf16 where the GPU supports it. The choice and the timings are printed.
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

from typing import Callable

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
PROBE_MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by this much to be picked: numerics cost something


def cpu_bf16_flags() -> list[str]:
    """The bf16 instruction sets this CPU reports (``amx_bf16``, ``avx512_bf16``); [] if none or unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[return-value]


# (G, D) -> a scalar loss through both: the shape of a training step; its inputs made beforehand
ProbeLoss = Callable[[nn.Module, "nn.Module | None"], torch.Tensor]


def latent_probe_loss(G: nn.Module, D: nn.Module | None, device: torch.device, batch: int) -> ProbeLoss:
    """The probe step of a (z, labels) generator and its (images, labels) discriminator."""
    generator = torch.Generator().manual_seed(0)  # the probe never touches the run's random streams
    z = torch.randn(batch, int(G.z_dim), generator=generator).to(device)
    labels = torch.randint(int(G.num_classes), (batch,), generator=generator).to(device)
    has_weights = D is not None and any(True for _ in D.parameters())

    def loss(G_: nn.Module, D_: nn.Module | None) -> torch.Tensor:
        images = G_(z, labels)
        return (_first(D_(images, labels)) if has_weights else images).float().mean()

    return loss


def _step_timer(G: nn.Module, D: nn.Module | None, precision: str, device: torch.device, batch: int,
                probe_loss: Callable[..., ProbeLoss] | None = None) -> Callable[[], float]:
    """A function timing one G forward + D forward/backward + G backward (the shape of a training step)."""
    step_loss = (probe_loss or latent_probe_loss)(G, D, device, batch)

    def one_step() -> float:
        start = time.perf_counter()
        with autocast(precision, device):
            loss = step_loss(G, D)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return one_step


def probe_speedup(G: nn.Module, D: nn.Module | None, device: torch.device, batch: int, repeats: int = 3,
                  probe_loss: Callable[..., ProbeLoss] | None = None) -> tuple[float, float]:
    """(fp32 seconds, bf16 seconds) per probe step, measured on copies of G and D: one warm-up step each,
    then ``repeats`` steps of each *alternating*, the fastest of each kept, so that a change in the
    machine's load (another job starting) hits both precisions alike instead of deciding the choice."""
    G, D = copy.deepcopy(G).train(), (copy.deepcopy(D).train() if D is not None else None)
    batch = max(2, min(batch, 64))
    timers = {name: _step_timer(G, D, name, device, batch, probe_loss) for name in ("fp32", "bf16")}
    for timer in timers.values():  # warm-up: kernels, caches, oneDNN primitive creation
        timer()
    best = {name: float("inf") for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    return best["fp32"], best["bf16"]


def resolve_precision(requested: str, device: torch.device, G: nn.Module, D: nn.Module | None, batch: int,
                      probe_loss: Callable[..., ProbeLoss] | None = None) -> tuple[str, str]:
    """(``fp32`` or ``bf16``, a sentence saying why) for ``--precision requested``. ``probe_loss(G, D,
    device, batch)`` builds the probe's step for networks that take other inputs than (z, labels)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}")
    if requested != "auto":
        return requested, "as asked"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports bf16"
        return "fp32", "the GPU has no bf16"
    if device.type != "cpu":
        return "fp32", f"no probe for {device.type}"
    flags = cpu_bf16_flags()
    if not flags:
        return "fp32", "this CPU reports no bf16 instructions (amx_bf16, avx512_bf16)"
    fp32, bf16 = probe_speedup(G, D, device, batch, probe_loss=probe_loss)
    ratio = fp32 / bf16
    measured = f"probe {fp32 * 1e3:.0f} ms fp32 vs {bf16 * 1e3:.0f} ms bf16 per step, {ratio:.2f}x ({', '.join(flags)})"
    if ratio >= PROBE_MIN_SPEEDUP:
        return "bf16", measured
    return "fp32", measured + f", below the {PROBE_MIN_SPEEDUP}x it takes"
