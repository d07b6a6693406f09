"""Structured channel pruning of the DiStyleGAN student to a MAC budget, then distillation back.

The student's widths are a chain: the 4x4 map after ``fc`` (c0 = ngf), then each up-block's GLU
output (c1 = c0/2, c2, c3 ...), then the to-RGB conv. A channel of that chain is removed with
everything that makes or reads it:

* ``fc``: 16 output features of the GLU's value half and the same 16 of its gate half (the 4x4
  cells of that channel), with their BatchNorm1d entries;
* an up-block: the conv filters of the value half (j) and of the gate half (c + j) together,
  so GLU still pairs a value with its own gate, with their BatchNorm2d entries;
* the next conv (or to-RGB): the matching input channel.

Importance is the L1 norm of the channel's filters (value + gate), each scaled by its BN
|gamma| / sqrt(var + eps) so that it measures what reaches the GLU. The same keep fraction is
applied to every width, the largest one whose MACs fit ``macs_ratio`` (MACs per conv scale with
c_in * c_out, so about sqrt(ratio)). Then BN running statistics are re-estimated and the pruned
model is distilled from the unpruned one through the training loop (pixel L1, plus the distill
run's discriminator features with ``--run``; finetune.py).

A pruned student is ``DiStyleGANGenerator(widths=...)``, saved and loaded as a normal checkpoint
(checkpoints of the former ``PrunedDiStyleGANGenerator`` load as that too).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from distilgan.errors import UserError
from distilgan.models.macs import count_macs
from distilgan.models.student import DiStyleGANGenerator


def current_widths(model: DiStyleGANGenerator) -> list[int]:
    if isinstance(model, DiStyleGANGenerator):
        return list(model.widths)
    raise UserError(f"pruning supports DiStyleGAN generators, not {type(model).__name__}")


def _bn_scale(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    return (bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)).detach()


def channel_importance(model: DiStyleGANGenerator) -> list[torch.Tensor]:
    """One score per channel of every width in the chain (value + gate filter L1, BN-scaled)."""
    widths = current_widths(model)
    scores = []
    linear, bn = model.fc[0], model.fc[1]
    per_feature = linear.weight.detach().abs().sum(1) * _bn_scale(bn)  # (2 * c0 * 16,)
    value, gate = per_feature.view(2, widths[0], 16)
    scores.append((value + gate).sum(1))
    for block, width in zip(model.up, widths[1:]):
        conv, bn = block[1], block[2]
        per_filter = conv.weight.detach().abs().sum((1, 2, 3)) * _bn_scale(bn)  # (2 * width,)
        scores.append(per_filter[:width] + per_filter[width:])
    return scores


def macs_for_widths(model: DiStyleGANGenerator, widths: Sequence[int]) -> int:
    """MACs per image of the student with these widths (same counting rules as models/macs.py)."""
    macs = model.z_dim * 2 * model.project_dim + (model.project_dim + model.num_classes) * 2 * widths[0] * 16
    side = 4
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        side *= 2
        macs += side * side * c_in * 2 * c_out * 9
    return macs + side * side * widths[-1] * model.channels * 9


def widths_for_ratio(model: DiStyleGANGenerator, macs_ratio: float) -> list[int]:
    """Widths within ``macs_ratio`` of the MACs: a uniform keep fraction, then greedy top-ups.

    Widths of 16 or more move in steps of 8 channels (SIMD-friendly), smaller ones by 1. The
    uniform fraction is the largest that fits; leftover budget is then spent adding one step to
    the width that is furthest below that fraction, while it still fits.
    """
    if not 0 < macs_ratio <= 1:
        raise UserError(f"--macs-ratio must be in (0, 1], got {macs_ratio}")
    full = current_widths(model)
    budget = macs_ratio * macs_for_widths(model, full)
    units = [8 if width >= 16 else 1 for width in full]
    widths = list(units)
    for step in range(1000, 0, -1):
        candidate = [max(u, min(f, round(f * step / 1000 / u) * u)) for f, u in zip(full, units)]
        if macs_for_widths(model, candidate) <= budget:
            widths = candidate
            break
    while True:
        order = sorted(range(len(full)), key=lambda i: widths[i] / full[i])
        for i in order:
            trial = list(widths)
            trial[i] = min(full[i], trial[i] + units[i])
            if trial[i] > widths[i] and macs_for_widths(model, trial) <= budget:
                widths = trial
                break
        else:
            return widths


def _take(tensor: torch.Tensor, index: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return tensor.detach().index_select(dim, index).clone()


def _copy_bn(dst: nn.modules.batchnorm._BatchNorm, src: nn.modules.batchnorm._BatchNorm, index: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data.copy_(_take(getattr(src, name), index))
    dst.num_batches_tracked.data.copy_(src.num_batches_tracked)


@torch.no_grad()
def prune_generator(model: DiStyleGANGenerator, widths: Sequence[int]) -> DiStyleGANGenerator:
    """A new, narrower DiStyleGANGenerator keeping the most important channels of ``model``."""
    full = current_widths(model)
    if len(widths) != len(full) or any(w > f or w < 1 for w, f in zip(widths, full)):
        raise UserError(f"widths {list(widths)} must be 1..{full} element-wise")
    cfg = {k: v for k, v in model.config.items() if k not in ("architecture", "widths")}
    pruned = DiStyleGANGenerator(**cfg, widths=list(widths)).eval()
    keep = [torch.sort(torch.topk(s, w).indices).values for s, w in zip(channel_importance(model), widths)]

    pruned.project.load_state_dict(model.project.state_dict())
    # fc: features are [value | gate], each (c0, 4, 4) flattened; keep both halves of kept channels
    cells = (keep[0][:, None] * 16 + torch.arange(16)).reshape(-1)
    fc_index = torch.cat([cells, cells + full[0] * 16])
    pruned.fc[0].weight.copy_(_take(model.fc[0].weight, fc_index))
    _copy_bn(pruned.fc[1], model.fc[1], fc_index)
    previous = keep[0]
    for block, new_block, width, index in zip(model.up, pruned.up, full[1:], keep[1:]):
        pair = torch.cat([index, index + width])  # GLU value channel j and its gate c + j
        weight = _take(_take(block[1].weight, pair, 0), previous, 1)
        new_block[1].weight.copy_(weight)
        _copy_bn(new_block[2], block[2], pair)
        previous = index
    pruned.to_image[0].weight.copy_(_take(model.to_image[0].weight, previous, 1))
    pruned.metadata = dict(getattr(model, "metadata", {}) or {})
    return pruned


def prune_and_distil(
    model: DiStyleGANGenerator,
    macs_ratio: float = 0.5,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
    progress: bool = True,
    *,
    feature_weight: float | None = None,
    discriminator: nn.Module | None = None,
    finetune: Mapping[str, Any] | None = None,
) -> tuple[DiStyleGANGenerator, dict[str, Any]]:
    """Prune to ``macs_ratio`` of the MACs, re-estimate BN, distil from the unpruned model.

    ``discriminator`` (the distill run's D) adds its feature loss to the pixel L1; ``finetune``
    holds distil()'s loop options (run_dir, resume, ema, metrics, options).
    """
    from distilgan.deploy.finetune import distil, l1_to, recalibrate_batchnorm

    teacher = copy.deepcopy(model).eval()
    widths = widths_for_ratio(model, macs_ratio)
    pruned = prune_generator(model, widths)
    before = count_macs(teacher).macs_per_image
    after = count_macs(pruned).macs_per_image
    report: dict[str, Any] = {
        "widths_before": current_widths(model), "widths_after": widths,
        "macs_before": before, "macs_after": after, "macs_ratio": after / before, "target_ratio": macs_ratio,
        "params_before": sum(p.numel() for p in teacher.parameters()),
        "params_after": sum(p.numel() for p in pruned.parameters()),
        "l1_to_unpruned_after_prune": l1_to(pruned, teacher),
    }
    # Re-estimated BN statistics help a trained student (its running stats are the true ones) but
    # not, e.g., an untrained one whose stats are still 0/1: keep them only when they help.
    recalibrated = copy.deepcopy(pruned)
    recalibrate_batchnorm(recalibrated, seed=seed)
    report["l1_to_unpruned_after_bn_recalibration"] = l1_to(recalibrated, teacher)
    report["bn_recalibrated"] = report["l1_to_unpruned_after_bn_recalibration"] < report["l1_to_unpruned_after_prune"]
    if report["bn_recalibrated"]:
        pruned = recalibrated
    if steps > 0:
        report["distillation"] = distil(pruned, teacher, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                        feature_weight=feature_weight, progress=progress, desc="prune: distil",
                                        discriminator=discriminator, **dict(finetune or {}))
    report["l1_to_unpruned_final"] = l1_to(pruned, teacher)
    return pruned.eval(), report
