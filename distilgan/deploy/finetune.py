"""Distil a modified student (pruned, or under fake quantisation) back towards the FP32 student.

No dataset is needed: the FP32 student is the teacher, and its inputs are z ~ N(0, I) with
balanced labels, drawn from ``distilgan.utils.noise`` (stream ``FINETUNE_STREAM``).

Loss: pixel L1 between the two outputs, plus an optional feature L1 through a fixed random-init
conv net (``RandomFeatures``). A generator checkpoint carries no discriminator, so the
discriminator-feature loss of training is not available here; random conv features are a cheap,
fixed stand-in that weighs local structure (edges, textures) beyond single pixels.

Batch norm runs in eval mode throughout (running statistics frozen, affine parameters trained):
what is optimised is exactly the inference function that gets exported. After pruning, the
running statistics are re-estimated first (``recalibrate_batchnorm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distilgan.utils.noise import balanced_labels, rng, sample_z

FINETUNE_STREAM = 7002
BN_STREAM = 7003


class RandomFeatures(nn.Module):
    """Three fixed random 3x3 conv + LeakyReLU layers; features of all three are compared."""

    def __init__(self, channels: int = 3, width: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers, c_in = [], channels
        for i in range(3):
            conv = nn.Conv2d(c_in, width, 3, stride=1 if i == 0 else 2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / np.sqrt(c_in * 9))
                conv.bias.zero_()
            layers.append(conv)
            c_in = width
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for conv in self.layers:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return features


def input_batch(z_dim: int, num_classes: int, batch_size: int, step: int, seed: int, stream: int = FINETUNE_STREAM) -> tuple[torch.Tensor, torch.Tensor]:
    z = sample_z(rng(seed, stream, step), batch_size, z_dim)
    offset = step * batch_size
    labels = balanced_labels(offset, offset + batch_size, range(num_classes))
    return torch.from_numpy(z), torch.from_numpy(labels)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: int = 20, batch_size: int = 256, seed: int = 0) -> None:
    """Re-estimate BN running statistics (cumulative average) on the generator's own inputs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.train()
    for step in range(batches):
        model(*input_batch(model.z_dim, model.num_classes, batch_size, step, seed, BN_STREAM))
    for m, momentum in saved:
        m.momentum = momentum
    model.eval()


def distil(
    student: nn.Module,
    teacher: nn.Module,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-4,
    seed: int = 0,
    feature_weight: float = 0.0,
    progress: bool = True,
    desc: str = "distil",
) -> dict[str, Any]:
    """Fine-tune ``student`` to match ``teacher`` (pixel L1 [+ random-feature L1]); BN kept in eval mode."""
    from tqdm import tqdm

    teacher.eval().requires_grad_(False)
    features = RandomFeatures(student.channels) if feature_weight > 0 else None
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.99))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    history: list[float] = []
    student.eval()
    for step in tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False):
        z, labels = input_batch(student.z_dim, student.num_classes, batch_size, step, seed)
        with torch.no_grad():
            target = teacher(z, labels)
        output = student(z, labels)
        loss = F.l1_loss(output, target)
        if features is not None:
            for a, b in zip(features(output), features(target)):
                loss = loss + feature_weight * F.l1_loss(a, b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(loss.item())
    head = float(np.mean(history[: max(1, len(history) // 10)])) if history else None
    tail = float(np.mean(history[-max(1, len(history) // 10) :])) if history else None
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "feature_weight": feature_weight,
            "loss_first_10pct": head, "loss_last_10pct": tail}


@torch.no_grad()
def l1_to(model: nn.Module, reference: nn.Module, n: int = 512, seed: int = 1, batch_size: int = 256) -> float:
    """Mean |model - reference| over n held-out inputs (a stream no fine-tuning step uses)."""
    total, count = 0.0, 0
    for step in range(0, n, batch_size):
        z, labels = input_batch(model.z_dim, model.num_classes, min(batch_size, n - step), step, seed, stream=7004)
        total += float((model(z, labels) - reference(z, labels)).abs().sum())
        count += z.shape[0] * model.channels * model.resolution**2
    return total / count
