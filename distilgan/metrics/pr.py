"""Precision/recall (Kynkäänniemi et al. 2019, k=3) and density/coverage (Naeem et al. 2020, k=5).

Both estimate each set's manifold as the union of balls around its samples, each ball's radius
being the distance to the sample's k-th nearest neighbour in its own set (the sample itself
excluded). Distances are computed in row batches on torch so 50k x 50k never sits in memory.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from distilgan.errors import UserError

PR_K = 3
DC_K = 5
BATCH_ELEMENTS = 1 << 25  # distance-matrix entries per batch (128 MB in float32)


def _tensor(features: np.ndarray, device: str) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)


def _for_row_batches(a: Any, b: Any, visit: Callable[[int, Any], None]) -> None:
    """Call ``visit(start, distances)`` for row batches of the Euclidean distance matrix a x b."""
    import torch

    rows = max(1, BATCH_ELEMENTS // max(1, len(b)))
    b_sq = (b * b).sum(1)
    for start in range(0, len(a), rows):
        block = a[start : start + rows]
        sq = (block * block).sum(1, keepdim=True) + b_sq[None] - 2.0 * block @ b.T
        visit(start, torch.sqrt(sq.clamp_min_(0)))


def knn_radii(features: Any, k: int) -> Any:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded)."""
    import torch

    if len(features) <= k:
        raise UserError(f"need more than k={k} samples for k-NN radii, got {len(features)}")
    radii = torch.empty(len(features), dtype=features.dtype, device=features.device)

    def visit(start: int, dist: Any) -> None:
        # The sample itself is at distance ~0, so the (k+1)-th smallest is the k-th neighbour.
        radii[start : start + len(dist)] = dist.kthvalue(k + 1, dim=1).values

    _for_row_batches(features, features, visit)
    return radii


def _inside_fraction(points: Any, centres: Any, radii: Any) -> float:
    """Fraction of ``points`` inside at least one ball (centres, radii)."""
    inside = []
    _for_row_batches(points, centres, lambda _s, d: inside.append((d <= radii[None]).any(1)))
    return float(np.concatenate([x.cpu().numpy() for x in inside]).mean())


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = PR_K, device: str = "cpu") -> dict[str, float]:
    g, r = _tensor(gen, device), _tensor(ref, device)
    return {
        "precision": _inside_fraction(g, r, knn_radii(r, k)),
        "recall": _inside_fraction(r, g, knn_radii(g, k)),
    }


def density_coverage(gen: np.ndarray, ref: np.ndarray, k: int = DC_K, device: str = "cpu") -> dict[str, float]:
    import torch

    g, r = _tensor(gen, device), _tensor(ref, device)
    radii = knn_radii(r, k)
    counts, nearest = [], torch.full((len(r),), float("inf"), device=device)

    def visit(_start: int, dist: Any) -> None:
        counts.append((dist <= radii[None]).sum(1))  # balls each generated sample falls in

    _for_row_batches(g, r, visit)

    def visit_ref(start: int, dist: Any) -> None:
        nearest[start : start + len(dist)] = dist.min(1).values

    _for_row_batches(r, g, visit_ref)
    density = float(torch.cat(counts).double().sum() / (k * len(g)))
    coverage = float((nearest <= radii).double().mean())
    return {"density": density, "coverage": coverage}


def compute(gen: Any, ref: Any, device: str = "cpu", seed: int = 0, **_: Any) -> dict[str, Any]:
    """Registry entry: equal sample counts on both sides, as the estimators assume."""
    from distilgan.utils.noise import rng

    ref_feats = ref.require_features("pr")
    n = min(len(gen.features), len(ref_feats))
    generator = rng(seed, 0x9E)
    g = gen.features if len(gen.features) == n else gen.features[np.sort(generator.choice(len(gen.features), n, replace=False))]
    r = ref_feats if len(ref_feats) == n else ref_feats[np.sort(generator.choice(len(ref_feats), n, replace=False))]
    result: dict[str, Any] = precision_recall(g, r, device=device)
    result.update(density_coverage(g, r, device=device))
    result.update({"pr_k": PR_K, "dc_k": DC_K, "pr_samples": n})
    return result
