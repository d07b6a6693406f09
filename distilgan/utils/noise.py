"""Latent noise and label sequences, deterministic from a seed.

Every sampler in distilgan draws z here so that a (seed, stream) pair always gives the same
numbers on every machine: numpy's PCG64 seeded through a SeedSequence of integers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rng(*seed_words: int) -> np.random.Generator:
    """Independent generator for a tuple of integers, e.g. ``rng(seed, shard_index)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in seed_words])))


def sample_z(generator: np.random.Generator, n: int, z_dim: int, truncation: float | None = None) -> np.ndarray:
    """z ~ N(0, I) as float32 (n, z_dim).

    With ``truncation`` (a threshold t > 0), values with |z| > t are redrawn until inside, i.e. a
    truncated normal as in BigGAN's truncation trick; the stored z is the truncated one.
    """
    z = generator.standard_normal((n, z_dim), dtype=np.float32)
    if truncation is not None:
        if truncation <= 0:
            raise ValueError("truncation must be > 0")
        outside = np.abs(z) > truncation
        while outside.any():
            z[outside] = generator.standard_normal(int(outside.sum()), dtype=np.float32)
            outside = np.abs(z) > truncation
    return z


def balanced_labels(start: int, stop: int, classes: Sequence[int]) -> np.ndarray:
    """Labels for global sample indices [start, stop): class ``classes[i % len(classes)]``.

    Interleaving keeps every shard (and every prefix of the set) balanced, and needs no RNG, so
    any shard's labels follow from its index range alone.
    """
    classes = np.asarray(list(classes), dtype=np.int64)
    return classes[np.arange(start, stop) % len(classes)]
