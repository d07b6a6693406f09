"""The DiStyleGAN student with per-layer widths: what structured pruning (deploy/prune.py) produces.

It saves and loads like any distilgan model, so a pruned checkpoint works everywhere a student does
(``generate``, ``serve``, ``distilgan:`` teachers, export).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from distilgan.errors import UserError
from distilgan.models.student import DiStyleGANGenerator, _init_layer


class PrunedDiStyleGANGenerator(DiStyleGANGenerator):
    """DiStyleGAN generator with per-layer widths: ``widths[0]`` channels at 4x4, then one per up-block."""

    def __init__(
        self,
        z_dim: int = 512,
        num_classes: int = 10,
        project_dim: int = 128,
        ngf: int = 256,
        resolution: int = 32,
        channels: int = 3,
        class_names: Sequence[str] | None = None,
        widths: Sequence[int] | None = None,
        z_distribution: Mapping[str, Any] | None = None,
        classes: Sequence[int] | None = None,
        teacher_fingerprint: str | None = None,
    ) -> None:
        super().__init__(z_dim, num_classes, project_dim, ngf, resolution, channels, class_names,
                         z_distribution=z_distribution, classes=classes, teacher_fingerprint=teacher_fingerprint)
        num_up = len(self.up)
        full = [ngf >> i for i in range(num_up + 1)]
        widths = [int(w) for w in (widths if widths is not None else full)]
        if len(widths) != num_up + 1 or min(widths) < 1:
            raise UserError(f"widths {widths} must hold {num_up + 1} positive channel counts (4x4 map, then each up-block)")
        self.widths = widths
        self.config["widths"] = widths
        self.fc[0] = nn.Linear(project_dim + num_classes, 2 * widths[0] * 16, bias=False)
        self.fc[1] = nn.BatchNorm1d(2 * widths[0] * 16)
        self.up = nn.Sequential(*(self._up_block(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.to_image[0] = nn.Conv2d(widths[-1], channels, 3, 1, 1, bias=False)
        self.apply(_init_layer)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        code = torch.cat([self.project(z), self.condition(labels, z.dtype)], dim=1)
        x = self.fc(code).view(-1, self.widths[0], 4, 4)
        return self.to_image(self.up(x))
