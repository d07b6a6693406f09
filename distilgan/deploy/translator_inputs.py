"""What an exported image translator is fed: INT8 calibration, the parity batch, benchmark inputs.

A generator's inputs are known exactly (z from its distribution, its classes); a translator's are
images, which only data can supply. INT8 activation ranges are therefore calibrated on the *source*
images of a pair set (``distilgan pairs``: the data a translator is distilled from), each with its
pair's edit, mapped to the translator's edit index by name. Without a pair set (fp32/fp16 parity,
timing) the inputs are synthetic: coarse random colour fields plus pixel noise, fixed by a seed.
Those compare two implementations of one function well enough; they say nothing of image quality.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.images import nhwc_to_nchw, uint8_to_float
from distilgan.utils.noise import balanced_labels, rng

SYNTHETIC_STREAM = 7021
PAIR_CHOICE_STREAM = 7022  # the parity/bench choice of pairs, apart from the calibration one
COARSE = 4  # side of the random colour field that synthetic images are blown up from


@dataclass
class TranslatorInputs:
    """uint8 NHWC images with the translator's edit index for each, and where they came from."""

    images: np.ndarray
    edits: np.ndarray
    described: str

    def __len__(self) -> int:
        return len(self.images)

    def take(self, n: int) -> "TranslatorInputs":
        """Exactly ``n`` rows, repeating from the start when there are fewer (a timing batch)."""
        rows = np.arange(n) % len(self)
        return TranslatorInputs(self.images[rows], self.edits[rows], self.described)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32 NCHW in [-1, 1], int64 edits): what the graph and the torch model take."""
        return nhwc_to_nchw(uint8_to_float(self.images)), self.edits.astype(np.int64)

    def feeds(self, batch: int, with_edits: bool) -> list[dict[str, np.ndarray]]:
        """Calibration feeds of ``batch`` rows (whole batches only, at least one), keyed by input name."""
        count = max(len(self) // batch, 1) * batch
        chosen = self.take(count) if count > len(self) else self
        images, edits = chosen.arrays()
        out = []
        for start in range(0, count, batch):
            feed = {"images": images[start : start + batch]}
            if with_edits:  # a one-edit translator's graph has no edits input
                feed["edits"] = edits[start : start + batch]
            out.append(feed)
        return out


def synthetic_images(n: int, resolution: int, channels: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 NHWC images: a COARSE x COARSE random colour field blown up (nearest), plus noise."""
    generator = rng(seed, SYNTHETIC_STREAM)
    coarse = generator.uniform(0, 255, (n, COARSE, COARSE, channels))
    index = np.arange(resolution) * COARSE // resolution
    images = coarse[:, index][:, :, index] + generator.normal(0, 16, (n, resolution, resolution, channels))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def synthetic_inputs(facts: Mapping[str, Any], n: int, seed: int = 0) -> TranslatorInputs:
    images = synthetic_images(n, int(facts["resolution"]), int(facts["channels"]), seed)
    edits = balanced_labels(0, n, range(int(facts["num_edits"])))
    return TranslatorInputs(images, edits, f"{n} synthetic images (random colour fields + noise, seed {seed}), balanced edits")


def edit_mapping(pair_names: list[str], facts: Mapping[str, Any], where: str) -> np.ndarray:
    """Pair-set edit index -> the translator's edit index (-1: an edit the translator does not do)."""
    names = [str(n) for n in facts.get("edit_names") or range(int(facts["num_edits"]))]
    mapping = np.array([names.index(n) if n in names else -1 for n in pair_names], dtype=np.int64)
    unnamed = names == [str(i) for i in range(len(names))]
    if (mapping < 0).all() and unnamed and len(pair_names) == len(names):
        return np.arange(len(names), dtype=np.int64)  # a translator saved without edit names: by position
    if (mapping < 0).all():
        raise UserError(f"{where} has edits {', '.join(pair_names)}; the translator does {', '.join(names)} "
                        "(give the pair set it was distilled from)")
    return mapping


def pair_inputs(pairs: str | os.PathLike, facts: Mapping[str, Any], n: int, seed: int, stream: int,
                option: str = "--calib-data") -> tuple[TranslatorInputs, int]:
    """Up to ``n`` source images of the pair set's kept pairs (a seeded random choice), each with its
    pair's edit; returns (inputs, pairs available)."""
    from distilgan.store.pairs import PairStore

    where = f"{option} {pairs}"
    store = PairStore.open(pairs)
    size, channels = int(facts["resolution"]), int(facts["channels"])
    if (store.resolution, store.channels) != (size, channels):
        raise UserError(f"{where} holds {store.resolution}x{store.resolution}x{store.channels} images; the translator "
                        f"takes {size}x{size}x{channels} (give the pair set it was distilled from)")
    mapping = edit_mapping(store.edit_names, facts, where)
    arrays = store.load_all()  # the pairs the filter kept: what the translator was trained on
    edits = mapping[arrays["edits"]]
    usable = np.flatnonzero(edits >= 0)
    if not len(usable):
        raise UserError(f"{where} has no kept pairs of the translator's edits (remake it, or give another pair set)")
    chosen = rng(seed, stream).permutation(usable)[:n]
    described = f"sources of pair set {pairs} ({len(chosen)} of its {len(usable)} kept pairs, noise.rng({seed}, {stream}))"
    return TranslatorInputs(arrays["sources"][chosen], edits[chosen], described), len(usable)


def translator_inputs(facts: Mapping[str, Any], n: int, seed: int = 0,
                      pairs: str | os.PathLike | None = None) -> TranslatorInputs:
    """Fixed inputs for parity and benchmarks: pair-set sources when given, else synthetic images."""
    if pairs is None:
        return synthetic_inputs(facts, n, seed)
    return pair_inputs(pairs, facts, n, seed, PAIR_CHOICE_STREAM)[0]


def translator_calibration(pairs: str | os.PathLike, facts: Mapping[str, Any], size: int, seed: int = 0,
                           batch: int = 1) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """(feeds, record) of a translator's INT8 calibration on ``size`` pair-set sources."""
    from distilgan.deploy.quantize import CALIBRATION_STREAM

    if size < 1:
        raise UserError(f"--calibration-size must be >= 1, got {size}")
    inputs, available = pair_inputs(pairs, facts, size, seed, CALIBRATION_STREAM)
    feeds = inputs.feeds(batch, int(facts["num_edits"]) > 1)
    record = {"samples": len(feeds) * batch, "requested": size, "images": inputs.described,
              "edits": "each pair's own edit"}
    if available < size:
        record["note"] = f"the pair set has {available} usable pairs, fewer than --calibration-size {size}"
    return feeds, record
