"""``builtin:toy`` — a procedural teacher with no weights; ``builtin:NAME`` — a shipped checkpoint.

The toy teacher draws each CIFAR-10 class as its own soft shape in its own colours (a cross for
airplane, a ring for dog, stripes for deer and ship, ...). z moves the picture smoothly through a
fixed random projection (seeded by a constant): colour jitter of shape and background, a shift
of up to ~2 pixels, a size change and a faint low-frequency texture. Every image is a linear
combination of a few per-class basis images with coefficients that are smooth functions of z, so
a batch is one small matrix product per class: pure numpy, no weights, far above 50,000 images/s.

Shift and scale use the first-order expansion ``m(u - d) ~ m - d * dm/du`` of a soft mask, which
is exact enough for shifts of a pixel or two and keeps everything linear in the basis.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.teachers.base import Teacher
from distilgan.teachers.adapter import apply_common, take_options

TOY_VERSION = 1  # bump when the pictures change: it is part of the fingerprint
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# (foreground RGB, background RGB) in [0, 1], one pair per class, chosen to be told apart at a glance
PALETTE = [
    ((0.92, 0.92, 0.96), (0.35, 0.60, 0.90)),
    ((0.85, 0.15, 0.15), (0.50, 0.50, 0.50)),
    ((0.95, 0.80, 0.20), (0.30, 0.60, 0.60)),
    ((0.90, 0.55, 0.20), (0.30, 0.20, 0.15)),
    ((0.60, 0.40, 0.20), (0.15, 0.40, 0.15)),
    ((0.80, 0.70, 0.50), (0.10, 0.10, 0.35)),
    ((0.30, 0.80, 0.20), (0.15, 0.15, 0.10)),
    ((0.35, 0.20, 0.10), (0.60, 0.80, 0.40)),
    ((0.25, 0.25, 0.30), (0.10, 0.35, 0.70)),
    ((0.20, 0.30, 0.80), (0.75, 0.70, 0.55)),
]
Z_DIM = 64
NUM_TEXTURES = 6
PROJECTION_SEED = 20240607
# How far z moves each factor (coordinates span [-1, 1] across the image).
COLOUR_JITTER, SHIFT, SCALE, TEXTURE = 0.15, 0.08, 0.08, 0.06
CHUNK_PIXELS = 1 << 17  # images per chunk x pixels per image


def _box(u: np.ndarray, v: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    """Signed distance to an axis-aligned box centred at 0 (negative inside)."""
    du, dv = np.abs(u) - half_w, np.abs(v) - half_h
    outside = np.hypot(np.maximum(du, 0), np.maximum(dv, 0))
    return outside + np.minimum(np.maximum(du, dv), 0)


def _shape_distances(u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """One signed-distance field per class, in image coordinates u (right) and v (down)."""
    r = np.hypot(u, v)
    stripes_u = np.abs((u * 1.5 + 10.25) % 1.0 - 0.5) / 1.5 - 0.17
    stripes_v = np.abs((v * 1.5 + 10.25) % 1.0 - 0.5) / 1.5 - 0.17
    triangle = np.maximum(v - 0.55, (np.abs(u) * 1.6 - (0.55 - v)) / np.hypot(1.6, 1.0) * 1.0)
    return [
        np.minimum(_box(u, v, 0.80, 0.13), _box(u, v + 0.05, 0.13, 0.65)),  # airplane: cross
        _box(u, v - 0.20, 0.62, 0.25) - 0.12,                                # automobile: low rounded box
        np.hypot(u - 0.05, v + 0.10) - 0.32,                                 # bird: small disk
        triangle,                                                            # cat: triangle
        stripes_u,                                                           # deer: vertical stripes
        np.abs(r - 0.52) - 0.14,                                             # dog: ring
        r - 0.72,                                                            # frog: big disk
        np.abs(u - v) / np.sqrt(2.0) - 0.22,                                 # horse: diagonal band
        stripes_v,                                                           # ship: horizontal stripes
        _box(u, v, 0.52, 0.52),                                              # truck: square
    ]


def build_basis(resolution: int) -> np.ndarray:
    """float32 (classes, 5 + NUM_TEXTURES, R*R): per class [1, m, dm/du, dm/dv, u dm/du + v dm/dv, textures]."""
    coords = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution * 2.0 - 1.0
    v, u = np.meshgrid(coords, coords, indexing="ij")
    softness = 1.5 * 2.0 / resolution  # ~1.5 pixels of edge blur keeps the shift expansion accurate
    step = 2.0 / resolution
    tex_rng = np.random.default_rng(PROJECTION_SEED + 1)
    textures = []
    for _ in range(NUM_TEXTURES):
        fu, fv = tex_rng.integers(-2, 3, size=2)
        phase = tex_rng.uniform(0, 2 * np.pi)
        textures.append(np.cos(np.pi * (fu * u + fv * v) + phase))
    basis = []
    for distance in _shape_distances(u, v):
        mask = 1.0 / (1.0 + np.exp(np.clip(distance / softness, -30, 30)))
        mask_v, mask_u = np.gradient(mask, step)
        rows = [np.ones_like(mask), mask, mask_u, mask_v, u * mask_u + v * mask_v, *textures]
        basis.append(np.stack([row.reshape(-1) for row in rows]))
    return np.stack(basis).astype(np.float32)


class ToyTeacher(Teacher):
    """Procedural 10-class teacher: z (N, 64) + labels -> (N, 3, R, R) in [-1, 1]."""

    def __init__(self, resolution: int = 32) -> None:
        self.z_dim, self.num_classes, self.channels = Z_DIM, len(CIFAR10_CLASSES), 3
        self.resolution = int(resolution)
        self.class_names = list(CIFAR10_CLASSES)
        self.basis = build_basis(self.resolution)
        rng = np.random.default_rng(PROJECTION_SEED)
        # z @ projection is N(0, 1) per factor: 3 bg colour, 3 fg colour, shift u, shift v, scale, textures
        self.projection = (rng.standard_normal((Z_DIM, 9 + NUM_TEXTURES)) / np.sqrt(Z_DIM)).astype(np.float32)
        palette = np.asarray(PALETTE, dtype=np.float32) * 2.0 - 1.0  # (classes, fg/bg, rgb) in [-1, 1]
        self.foreground, self.background = palette[:, 0], palette[:, 1]

    def _coefficients(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N, 3, 5 + NUM_TEXTURES) weights of the basis rows for every image and channel."""
        t = np.tanh(z @ self.projection)
        background = self.background[labels] + COLOUR_JITTER * t[:, 0:3]
        contrast = self.foreground[labels] + COLOUR_JITTER * t[:, 3:6] - background
        shift_u, shift_v, scale = SHIFT * t[:, 6:7], SHIFT * t[:, 7:8], SCALE * t[:, 8:9]
        coeffs = np.empty((len(z), 3, 5 + NUM_TEXTURES), np.float32)
        coeffs[:, :, 0] = background
        coeffs[:, :, 1] = contrast
        coeffs[:, :, 2] = -contrast * shift_u
        coeffs[:, :, 3] = -contrast * shift_v
        coeffs[:, :, 4] = -contrast * scale
        coeffs[:, :, 5:] = (TEXTURE * t[:, None, 9:]).astype(np.float32)
        return coeffs

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        r = self.resolution
        out = np.empty((len(z), 3, r * r), np.float32)
        # Chunks keep the per-class products in cache; most of the time is memory traffic.
        chunk = max(1, CHUNK_PIXELS // (r * r))
        for start in range(0, len(z), chunk):
            stop = min(start + chunk, len(z))
            coeffs = self._coefficients(z[start:stop], labels[start:stop])
            part = out[start:stop]
            for cls in np.unique(labels[start:stop]):
                idx = np.flatnonzero(labels[start:stop] == cls)
                rows = coeffs[idx].reshape(-1, coeffs.shape[2])
                part[idx] = (rows @ self.basis[cls]).reshape(len(idx), 3, r * r)
            np.clip(part, -1.0, 1.0, out=part)
        return out.reshape(len(z), 3, r, r)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"distilgan builtin:toy v{TOY_VERSION} resolution={self.resolution}".encode()).hexdigest()


def pretrained_root() -> Path:
    return Path(__file__).resolve().parents[1] / "pretrained"


def _shipped() -> dict[str, bool]:
    """Checkpoint folders in ``distilgan/pretrained/`` -> whether each is a generator (its config has a
    z_dim; the shipped CIFAR-10 classifiers, for calibrate and the metrics, have none)."""
    import json

    root = pretrained_root()
    found: dict[str, bool] = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found[folder.name] = isinstance(config, dict) and config.get("z_dim") is not None
    return found


def available_names() -> list[str]:
    """``toy`` and the generator checkpoints shipped in ``distilgan/pretrained/`` (not the classifiers)."""
    return ["toy", *(name for name, generator in _shipped().items() if generator)]


def load(location: str, **options: Any) -> Teacher:
    """``toy`` (options: the common ones plus ``resolution``, default 32) or a shipped checkpoint name."""
    if location == "toy":
        opts = take_options(options, "builtin:toy", {"resolution": 32})
        resolution = int(opts["resolution"])
        if not 8 <= resolution <= 1024:
            raise UserError(f"builtin:toy resolution must be between 8 and 1024, got {resolution}")
        # device is accepted and ignored: the toy is numpy on the CPU whatever the student uses
        teacher = ToyTeacher(resolution)
        apply_common(teacher, opts)
        return teacher
    if location in available_names():
        from distilgan.teachers import checkpoint

        return checkpoint.load(str(pretrained_root() / location), **options)
    if location in _shipped():
        raise UserError(f"built-in '{location}' is a classifier, not a generator, so it cannot be a teacher "
                        f"(built-in teachers: {', '.join(available_names())})")
    raise UserError(f"unknown built-in teacher '{location}' (available: {', '.join(available_names())})")
