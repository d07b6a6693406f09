"""Exponential moving average of the generator's weights (the copy we ship and sample grids from)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * weights`` after every G update; buffers are copied.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` for the n-th update, so short runs
    (and the first epochs of long ones) are not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
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
        for shadow_buffer, buffer in zip(self.shadow.buffers(), model.buffers()):
            shadow_buffer.copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.shadow.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
