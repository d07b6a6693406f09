"""Latent noise and label sequences, deterministic from a seed.

Every sampler in distilgan draws z here so that a (seed, stream) pair always gives the same
numbers on every machine: numpy's PCG64 seeded through a SeedSequence of integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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


# -- the z distribution a model was trained on ------------------------------------------------------
Z_KINDS = ("normal", "truncated", "scaled-truncnorm")
# how to write each kind in one line, for help texts and errors
Z_KIND_HELP = {
    "normal": "z ~ N(0, I)",
    "truncated": "BigGAN paper: N(0, I) with every |z| > t redrawn",
    "scaled-truncnorm": "TF-hub BigGAN / TinyGAN: t * truncnorm(-2, 2)",
}


@dataclass(frozen=True)
class ZDistribution:
    """The latent distribution a teacher was sampled with and a student was trained on.

    ``truncated`` is the BigGAN paper's truncation trick (values with |z| > t redrawn); ``scaled-truncnorm``
    is the TF-hub BigGAN convention TinyGAN samples with, ``t * truncnorm(-2, 2)``: the same shape at
    t = 2 only, and a narrower one (scaled, not cut) below it.
    """

    kind: str = "normal"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in Z_KINDS:
            raise ValueError(f"unknown z distribution {self.kind!r} (choose from {', '.join(Z_KINDS)})")
        if self.kind == "normal" and self.threshold is not None:
            raise ValueError("the normal z distribution takes no threshold")
        if self.kind != "normal" and (self.threshold is None or not self.threshold > 0):
            raise ValueError(f"the {self.kind} z distribution needs a threshold > 0")

    # numpy: every sampler of the library (stores, generate, eval, serve, calibration)
    def sample(self, generator: np.random.Generator, n: int, z_dim: int) -> np.ndarray:
        if self.kind == "normal":
            return sample_z(generator, n, z_dim)
        if self.kind == "truncated":
            return sample_z(generator, n, z_dim, self.threshold)
        return (sample_z(generator, n, z_dim, 2.0) * np.float32(self.threshold)).astype(np.float32)

    # torch: fresh z inside a training objective, from its own saved torch.Generator
    def sample_torch(self, generator: Any, n: int, z_dim: int) -> Any:
        import torch

        z = torch.randn(n, z_dim, generator=generator)
        if self.kind == "normal":
            return z
        limit = self.threshold if self.kind == "truncated" else 2.0
        outside = z.abs() > limit
        while bool(outside.any()):
            z[outside] = torch.randn(int(outside.sum()), generator=generator)
            outside = z.abs() > limit
        return z * self.threshold if self.kind == "scaled-truncnorm" else z

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind} if self.threshold is None else {"kind": self.kind, "threshold": float(self.threshold)}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> "ZDistribution":
        """From a config or manifest entry; ``None`` (files older than this field) is the normal one and
        ``truncated_normal`` is how stores before the named kinds wrote ``truncated``."""
        if not value:
            return cls()
        kind = str(value.get("kind", "normal"))
        kind = {"truncated_normal": "truncated"}.get(kind, kind)
        threshold = value.get("threshold")
        return cls(kind, None if threshold is None else float(threshold))

    def describe(self) -> str:
        return "normal" if self.kind == "normal" else f"{self.kind} (t={self.threshold:g})"
