"""Exponential moving average of the generator's weights (the copy we ship and sample grids from).

BatchNorm matters here: both the student and the BigGAN teacher normalise with running statistics
at inference, so the EMA copy must carry statistics that belong to *its* weights, not the raw
generator's. ``buffers`` chooses how (measured in docs/training.md):

* ``average``: BN running means and variances are averaged with the same decay as the
  weights (as BigGAN-PyTorch's ``utils.ema`` and ``AveragedModel(use_buffers=True)`` average
  buffers); spectral norm's u/v (unit vectors, used as they are in eval mode) and
  ``num_batches_tracked`` are copied.
* ``copy``: buffers copied from the raw generator (what distilgan did before; kept for old runs).
* ``recompute`` (the training default, measured best in docs/training.md): averaged as ``average``
  during training, and re-estimated on the EMA weights' own outputs (standing statistics,
  ``recompute_batchnorm``) whenever a checkpoint is written.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

BUFFER_MODES = ("average", "copy", "recompute")


class EMA:
    """``shadow = decay * shadow + (1 - decay) * weights`` after every G update.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` for the n-th update, so short runs
    (and the first epochs of long ones) are not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True, buffers: str = "average") -> None:
        if buffers not in BUFFER_MODES:
            raise ValueError(f"unknown EMA buffer mode {buffers!r} (choose from {', '.join(BUFFER_MODES)})")
        self.decay, self.warmup, self.buffers = decay, warmup, buffers
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        shadow_params = list(self.shadow.parameters())
        model_params = [p.detach() for p in model.parameters()]
        # one fused kernel per list instead of a Python loop over every tensor
        torch._foreach_lerp_(shadow_params, model_params, 1.0 - decay)
        # BN running statistics are averaged like the weights; every other buffer (spectral norm's
        # u/v, which must stay unit vectors, and num_batches_tracked) is copied from the raw model
        averaged = self._bn_statistics() if self.buffers != "copy" else set()
        shadow_avg, model_avg = [], []
        for (name, shadow_buffer), buffer in zip(self.shadow.named_buffers(), model.buffers()):
            if name in averaged:
                shadow_avg.append(shadow_buffer)
                model_avg.append(buffer.detach())
            else:
                shadow_buffer.copy_(buffer)
        if shadow_avg:
            torch._foreach_lerp_(shadow_avg, model_avg, 1.0 - decay)
        self.num_updates += 1

    def _bn_statistics(self) -> set[str]:
        if not hasattr(self, "_bn_names"):
            self._bn_names = {f"{prefix}.{stat}" if prefix else stat
                              for prefix, module in self.shadow.named_modules()
                              if isinstance(module, nn.modules.batchnorm._BatchNorm)
                              for stat in ("running_mean", "running_var")
                              if getattr(module, stat, None) is not None}
        return self._bn_names

    def follow(self, model: nn.Module) -> None:
        """Before ``ema_start`` the copy just follows the raw model (BigGAN), weights and buffers."""
        self.shadow.load_state_dict(model.state_dict())

    def state_dict(self) -> dict:
        return {"model": self.shadow.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, draw_inputs: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                        batches: int = 16) -> nn.Module:
    """A copy of ``model`` whose BN running statistics are the cumulative average over ``batches``
    training-mode forwards of its own inputs (``draw_inputs(i) -> (z, labels)``); the model is untouched."""
    copy_ = copy.deepcopy(model)
    norms = batchnorm_layers(copy_)
    if not norms:
        return copy_
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch, not an exponential one
    copy_.train()
    for i in range(batches):
        copy_(*draw_inputs(i))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return copy_.eval()
