"""t-SNE maps of generated images: scikit-learn's Barnes-Hut t-SNE, and the images laid on a grid by it.

The embedding is scikit-learn's ``TSNE`` (van der Maaten 2014's Barnes-Hut approximation, O(N log N),
PCA initialisation, automatic learning rate) on the features reduced to 300 dimensions by PCA, as
is usual for Inception features. The grid layout (an optimal assignment of points to cells) and the
pictures are ours.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from distilgan.utils.extras import need

MIN_ITERATIONS = 250  # scikit-learn's minimum for max_iter


def pca(features: np.ndarray, dims: int = 300) -> np.ndarray:
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    dims = min(dims, *x.shape)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:dims].T).astype(np.float32)


def tsne(
    features: np.ndarray, perplexity: float = 30.0, iterations: int = 750, seed: int = 0, progress: bool = True
) -> np.ndarray:
    """(N, D) features -> (N, 2) float64 embedding (``iterations`` >= 250; ``progress`` is accepted for
    the callers' sake: scikit-learn reports no progress)."""
    manifold = need("sklearn.manifold", "the t-SNE map")
    n = len(features)
    if n < 4:
        raise ValueError("t-SNE needs at least 4 points")
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"t-SNE needs at least {MIN_ITERATIONS} iterations, got {iterations}")
    model = manifold.TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), max_iter=int(iterations),
                          init="pca", learning_rate="auto", random_state=int(seed), method="barnes_hut")
    return model.fit_transform(pca(features)).astype(np.float64)


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
