"""A small exact t-SNE (van der Maaten & Hinton 2008) in torch, and images laid on a grid by it.

Exact O(N^2) gradients are fine for the few thousand samples a class map needs (5,000 points:
a 25M-entry matrix per step). Steps: PCA to 300 dimensions, perplexity-calibrated affinities
(binary search on each row's precision), early exaggeration, momentum gradient descent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from distilgan.utils.extras import need


def pca(features: np.ndarray, dims: int = 300) -> np.ndarray:
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    dims = min(dims, *x.shape)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:dims].T).astype(np.float32)


def _affinities(x: Any, perplexity: float) -> Any:
    """Symmetric P with each row's conditional distribution at the given perplexity."""
    import torch

    n = len(x)
    d = torch.cdist(x, x).pow_(2)
    d.fill_diagonal_(float("inf"))
    target = math.log(perplexity)
    lo = torch.full((n, 1), 1e-20, dtype=x.dtype)
    hi = torch.full((n, 1), 1e20, dtype=x.dtype)
    beta = torch.ones((n, 1), dtype=x.dtype) / d[torch.isfinite(d)].median()
    for _ in range(64):  # bisection in log space on every row at once
        logits = -d * beta
        p = torch.softmax(logits, dim=1)
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1, keepdim=True)
        too_flat = entropy > target  # perplexity too high: sharpen (raise beta)
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.sqrt(lo * hi)
    p = torch.softmax(-d * beta, dim=1)
    return (p + p.T) / (2 * n)


def tsne(
    features: np.ndarray, perplexity: float = 30.0, iterations: int = 750, seed: int = 0, progress: bool = True
) -> np.ndarray:
    """(N, D) features -> (N, 2) embedding."""
    import torch

    n = len(features)
    if n < 4:
        raise ValueError("t-SNE needs at least 4 points")
    perplexity = min(perplexity, (n - 1) / 3)
    threads = torch.get_num_threads()
    if n < 2000:  # small matrices gain nothing from threads, and lose a lot on a busy machine
        torch.set_num_threads(1)
    try:
        return _tsne(features, perplexity, iterations, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _tsne(features: np.ndarray, perplexity: float, iterations: int, seed: int, progress: bool) -> np.ndarray:
    import torch
    from distilgan.utils.progress import progress_bar

    n = len(features)
    x = torch.from_numpy(pca(features)).double()
    p = _affinities(x, perplexity).float()
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 2, generator=gen) * 1e-4
    velocity = torch.zeros_like(y)
    gains = torch.ones_like(y)
    exaggeration_steps = min(250, iterations // 3)
    learning_rate = max(n / 12.0, 50.0)
    for step in progress_bar(range(iterations), desc="t-SNE", disable=not progress, leave=False):
        exaggeration = 12.0 if step < exaggeration_steps else 1.0
        momentum = 0.5 if step < exaggeration_steps else 0.8
        num = 1.0 / (1.0 + torch.cdist(y, y).pow_(2))
        num.fill_diagonal_(0.0)
        q = num / num.sum()
        weight = (exaggeration * p - q) * num  # dC/dy_i = 4 sum_j (p_ij - q_ij) num_ij (y_i - y_j)
        grad = 4.0 * (weight.sum(1, keepdim=True) * y - weight @ y)
        same_sign = torch.sign(grad) == torch.sign(velocity)
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        velocity = momentum * velocity - learning_rate * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y.numpy().astype(np.float64)


def grid_assignment(embedding: np.ndarray) -> tuple[np.ndarray, int]:
    """Cell index (row-major on a side x side grid) for every point, by optimal linear assignment."""
    need("scipy")
    from scipy.optimize import linear_sum_assignment

    n = len(embedding)
    side = int(math.ceil(math.sqrt(n)))
    e = embedding - embedding.min(0)
    e = e / np.maximum(e.max(0), 1e-12)
    ticks = (np.arange(side) + 0.5) / side
    cells = np.stack(np.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(-1, 2)  # (x, y) of cell k
    cost = ((e[:, None, :] - cells[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assignment = np.empty(n, np.int64)
    assignment[rows] = cols
    return assignment, side


def grid_image(images: np.ndarray, assignment: np.ndarray, side: int, background: int = 255) -> np.ndarray:
    """uint8 NHWC images pasted into their cells -> one uint8 HWC image."""
    n, h, w, c = images.shape
    canvas = np.full((side * h, side * w, c), background, np.uint8)
    for i, cell in enumerate(assignment):
        r, col = divmod(int(cell), side)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i]
    return canvas


PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def scatter_image(embedding: np.ndarray, labels: np.ndarray, class_names: list[str] | None, size: int = 1024) -> Any:
    """A PIL scatter plot of the embedding coloured by class, with a legend."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    margin = 20
    e = embedding - embedding.min(0)
    e = e / np.maximum(e.max(0), 1e-12) * (size - 2 * margin) + margin
    classes = sorted(int(c) for c in np.unique(labels))
    for (x, y), label in zip(e, labels):
        colour = PALETTE[classes.index(int(label)) % len(PALETTE)]
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    for i, c in enumerate(classes):  # legend, top-left
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        draw.rectangle([8, 8 + 14 * i, 18, 18 + 14 * i], fill=PALETTE[i % len(PALETTE)])
        draw.text((22, 7 + 14 * i), name, fill="black")
    return image
