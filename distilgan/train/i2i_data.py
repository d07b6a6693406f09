"""The data of an image-to-image distillation run: a pair set split into training and held-out pairs,
the training batches, and what the loop feeds the translator for its grid and BN re-estimation.

The held-out pairs are the set's last ``holdout`` (pairs interleave the edits, so every edit is held
out alike) and are taken before any filtering, so a run with the classifier filter and one without
it are judged on the same pairs; of those, the metrics use the ones the set's own filter kept (a
rejected pair's target is a bad answer key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from distilgan.errors import UserError
from distilgan.train.distributed import DistContext
from distilgan.train.inputs import BN_STREAM
from distilgan.utils.images import nhwc_to_nchw, uint8_to_float
from distilgan.utils.noise import rng

PAIR_STREAM = 0x9A12  # the order of the training pairs, per epoch
MIRROR_STREAM = 0x9A13  # which pairs are flipped, per epoch
GRID_PAIRS, GRID_PAIRS_PER_ROW = 24, 4  # grid: rows of (source | student | teacher) triplets


def to_float(images: np.ndarray, device: Any) -> Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] on ``device``."""
    return torch.from_numpy(uint8_to_float(nhwc_to_nchw(images))).to(device)


@dataclass
class PairSplit:
    """Training and held-out pairs (uint8 NHWC images, int64 edits), and what was chosen."""

    train_sources: np.ndarray
    train_targets: np.ndarray
    train_edits: np.ndarray
    val_sources: np.ndarray
    val_targets: np.ndarray
    val_edits: np.ndarray
    val_target_labels: np.ndarray
    description: dict[str, Any]


def split_pairs(store: Any, holdout: int, filtered: bool, min_confidence: float | None) -> PairSplit:
    """The run's pairs from a PairStore: the last ``holdout`` held out, the rest filtered as asked."""
    arrays = store.load_all(filtered=False)
    total = len(arrays["edits"])
    if holdout >= total:
        raise UserError(f"--holdout {holdout} leaves no training pairs in a set of {total} (lower --holdout)")
    has_scores = bool(store.filtered)
    if filtered and not has_scores:
        raise UserError(f"{store.manifest.get('out', 'the pair set')} was made with --no-filter: it has no scores to "
                        "filter by (add --no-filtered, or remake it with a --filter-model)")
    train = np.arange(total - holdout)
    val = np.arange(total - holdout, total)
    kept_set = store.kept_mask() if has_scores else np.ones(total, bool)
    kept_run = store.kept_mask(min_confidence) if (filtered and has_scores) else np.ones(total, bool)
    train = train[kept_run[train]]
    val = val[kept_set[val]]
    if len(train) == 0:
        raise UserError("the filter keeps no training pairs (lower --min-confidence, or add --no-filtered)")
    pick = lambda key, idx: arrays[key][idx]  # noqa: E731
    description = {"pairs": total, "holdout": int(holdout), "holdout_kept": int(len(val)),
                   "train_pairs": int(len(train)), "filtered": bool(filtered and has_scores),
                   "min_confidence": (None if not (filtered and has_scores) else
                                      float(min_confidence if min_confidence is not None
                                            else store.manifest.get("filter", {}).get("min_confidence", 0.0)))}
    return PairSplit(pick("sources", train), pick("targets", train), pick("edits", train).astype(np.int64),
                     pick("sources", val), pick("targets", val), pick("edits", val).astype(np.int64),
                     pick("target_labels", val).astype(np.int64), description)


class PairBatches:
    """BatchSource of ``{"sources", "targets", "edits"}``: a fixed random order per epoch (and a fixed
    set of mirrored pairs), a pure function of (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, sources: np.ndarray, targets: np.ndarray, edits: np.ndarray, batch_size: int, seed: int,
                 dist: DistContext | None = None, mirror: bool = True) -> None:
        self.dist = dist or DistContext()
        if batch_size < 1 or batch_size % self.dist.world_size:
            raise UserError(f"--batch-size {batch_size} must be >= 1 and divisible by the {self.dist.world_size} processes")
        if len(sources) < batch_size:
            raise UserError(f"{len(sources)} training pairs are fewer than one batch of {batch_size} (lower --batch-size "
                            "or make more pairs)")
        self.sources, self.targets, self.edits = sources, targets, np.asarray(edits, np.int64)
        self.batch_size, self.seed, self.mirror = int(batch_size), int(seed), bool(mirror)
        self.local = self.batch_size // self.dist.world_size
        self.steps_per_epoch = len(sources) // self.batch_size  # the last partial batch is dropped

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Tensor]]:
        n = len(self.sources)
        order = rng(self.seed, PAIR_STREAM, epoch).permutation(n)
        flips = rng(self.seed, MIRROR_STREAM, epoch).random(n) < 0.5 if self.mirror else np.zeros(n, bool)
        device = self.dist.device
        for index in range(skip, self.steps_per_epoch):
            chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
            chosen = chosen[self.dist.rank * self.local:(self.dist.rank + 1) * self.local]
            sources, targets = self.sources[chosen], self.targets[chosen]
            flip = flips[chosen]
            if flip.any():  # the same flip on both images of a pair: still an edit of that image
                sources, targets = sources.copy(), targets.copy()
                sources[flip], targets[flip] = sources[flip, :, ::-1], targets[flip, :, ::-1]
            yield {"sources": to_float(sources, device), "targets": to_float(targets, device),
                   "edits": torch.from_numpy(self.edits[chosen]).to(device)}

    def state_dict(self) -> dict[str, Any]:
        return {}  # the position is (epoch, batch_in_epoch), kept by the trainer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class PairInputs:
    """The loop's ModelInputs for a translator: held-out pairs in the grid (source | student | teacher),
    training sources for the BN re-estimation."""

    def __init__(self, split: PairSplit, seed: int) -> None:
        self.split, self.seed = split, int(seed)
        self.grid_nrow = 3 * GRID_PAIRS_PER_ROW

    def bn_inputs(self, i: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        chosen = rng(self.seed, BN_STREAM, i).choice(len(self.split.train_sources), size=batch,
                                                     replace=len(self.split.train_sources) < batch)
        return to_float(self.split.train_sources[chosen], device), torch.from_numpy(self.split.train_edits[chosen]).to(device)

    def grid_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sources, targets, edits) of the grid: held-out pairs, else the first training pairs."""
        split = self.split
        if len(split.val_sources):
            sources, targets, edits = split.val_sources, split.val_targets, split.val_edits
        else:  # no held-out pairs (--holdout 0, or the filter kept none): the grid shows training pairs
            sources, targets, edits = split.train_sources, split.train_targets, split.train_edits
        count = min(GRID_PAIRS, len(sources))
        count -= count % GRID_PAIRS_PER_ROW if count >= GRID_PAIRS_PER_ROW else 0
        return sources[:count], targets[:count], edits[:count]

    def grid_images(self, model: nn.Module, device: torch.device) -> np.ndarray:
        sources, targets, edits = self.grid_inputs()
        inputs = to_float(sources, device)
        outputs = model(inputs, torch.from_numpy(edits).to(device)).float()
        triplets = torch.stack([inputs.float(), outputs, to_float(targets, device).float()], dim=1)
        return triplets.flatten(0, 1).cpu().numpy()

    def probe_loss(self, G: nn.Module, D: nn.Module | None, device: torch.device, batch: int) -> Any:
        """The precision probe's step (train/precision.py): translate, then D on (source, output)."""
        sources, edits = self.bn_inputs(0, batch, device)

        def loss(G_: nn.Module, D_: nn.Module | None) -> Tensor:
            outputs = G_(sources, edits)
            return (D_(sources, outputs, edits)[0] if D_ is not None else outputs).float().mean()

        return loss
