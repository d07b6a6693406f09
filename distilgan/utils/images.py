"""The one mapping between float images in [-1, 1] and uint8, and PNG grids.

Quantisation (documented in the README): ``u = clamp(round((x + 1) * 127.5), 0, 255)``, with
round-half-to-even as numpy and torch do; the inverse used for training is ``x = u / 127.5 - 1``.
Never a per-image min-max rescale: that changes the colours the teacher produced.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from distilgan.errors import UserError


def float_to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float (any layout) -> uint8, same layout."""
    # In place on one float32 buffer: this runs on every sampled image, so it is the hot path of `sample`.
    scaled = np.add(images, 1.0, dtype=np.float32)
    scaled *= 127.5
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def uint8_to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (any layout) -> float32 in [-1, 1], same layout."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0


def nchw_to_nhwc(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(images, (0, 2, 3, 1)))


def nhwc_to_nchw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image, ``nrow`` images per row."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError("make_grid expects uint8 NHWC images")
    n, h, w, c = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Save one uint8 HWC image (C = 1 or 3) as PNG, atomically."""
    from PIL import Image

    from distilgan.utils.atomic import atomic_path

    array = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None) -> None:
    save_png(make_grid(images, nrow=nrow), path)


def fit_pil(image: Any, resolution: int, channels: int, resize: bool = False, where: str = "image") -> np.ndarray:
    """One PIL image -> uint8 (resolution, resolution, channels): mode converted (alpha dropped, gray
    repeated), resized only when asked (area when shrinking, bicubic otherwise)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise UserError(f"{where} is a {type(image).__name__}, not a PIL image (give PIL images, a uint8 NHWC array or a float NCHW tensor)")
    if channels not in (1, 3):
        raise UserError(f"PIL images cannot feed a {channels}-channel model (give a uint8 NHWC array)")
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (resolution, resolution):
        if not resize:
            raise UserError(f"{where} is {image.size[0]}x{image.size[1]} but the translator takes {resolution}x{resolution} (resize it, or pass resize=True)")
        shrinking = image.size[0] >= resolution and image.size[1] >= resolution
        image = image.resize((resolution, resolution), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
