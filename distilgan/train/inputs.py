"""What G is fed outside its objective: the inputs of the per-epoch grid and of the BatchNorm
re-estimation of the shipped copy. A generator takes (z, labels) (``LatentInputs``); an image-to-image
student takes (images, edits) (``train/i2i_data.py``). The loop asks this object, never the model."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from distilgan.train.config import LoopConfig
from distilgan.utils.noise import rng, sample_z

GRID_STREAM = 0x6121D  # seeds the fixed z of the per-epoch grid
MAX_GRID_ROWS = 32  # one row per class, at most this many classes (evenly spread) in the grid
BN_STREAM = 0xB4E5  # inputs of the EMA copy's BN re-estimation (ema_buffers recompute)

ZSampler = Callable[[np.random.Generator, int], np.ndarray]


class ModelInputs(Protocol):
    """The inputs of G for the per-epoch grid and the BN re-estimation of the shipped copy: (z, labels)
    for a generator (LatentInputs), (images, edits) for an image-to-image student (train/i2i_data.py)."""

    grid_nrow: int

    def bn_inputs(self, i: int, batch: int, device: torch.device) -> tuple[Tensor, ...]: ...

    def grid_inputs(self) -> tuple[np.ndarray, ...]: ...

    def grid_images(self, model: nn.Module, device: torch.device) -> np.ndarray: ...

    # optional: ``probe_loss(G, D, device, batch) -> (G, D) -> loss``, the precision probe's step for networks
    # that do not take (z, labels) (train/precision.py; LatentInputs needs none: it is the probe's default)


class LatentInputs:
    """(z, labels) of the model's own z distribution and classes: one grid row per class."""

    def __init__(self, generator: nn.Module, loop: LoopConfig, z_sampler: ZSampler | None = None,
                 classes: list[int] | None = None) -> None:
        z_dim = int(generator.z_dim)
        self.z_sampler = z_sampler or (lambda generator_, n: sample_z(generator_, n, z_dim))
        self.classes = np.asarray(list(range(int(generator.num_classes))) if classes is None else list(classes), np.int64)
        self.seed, self.grid_nrow = loop.seed, loop.grid_columns

    def bn_inputs(self, i: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        z = self.z_sampler(rng(self.seed, BN_STREAM, i), batch)
        labels = self.classes[(np.arange(batch) + i * batch) % len(self.classes)]
        return torch.from_numpy(z).to(device), torch.from_numpy(labels).to(device)

    def grid_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed z and labels of the per-epoch grid: one row per class, ``grid_columns`` per row."""
        count = len(self.classes)
        classes = self.classes[np.unique(np.linspace(0, count - 1, min(count, MAX_GRID_ROWS)).round().astype(np.int64))]
        labels = np.repeat(classes, self.grid_nrow)
        z = self.z_sampler(rng(self.seed, GRID_STREAM), len(labels))
        return z, labels

    def grid_images(self, model: nn.Module, device: torch.device) -> np.ndarray:
        z, labels = self.grid_inputs()
        return model(torch.from_numpy(z).to(device), torch.from_numpy(labels).to(device)).float().cpu().numpy()
