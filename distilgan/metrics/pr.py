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


def knn_radii(features: Any, ks: int | tuple[int, ...]) -> Any:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded);
    for a tuple of ks, one tensor per k from a single pass over the distance matrix."""
    import torch

    wanted = (ks,) if isinstance(ks, int) else tuple(ks)
    top = max(wanted)
    if len(features) <= top:
        raise UserError(f"need more than k={top} samples for k-NN radii, got {len(features)}")
    radii = torch.empty(len(features), len(wanted), dtype=features.dtype, device=features.device)
    columns = torch.tensor(wanted, device=features.device)

    def visit(start: int, dist: Any) -> None:
        # The sample itself is at distance ~0, so the (k+1)-th smallest is the k-th neighbour;
        # topk is an exact selection, so each column equals kthvalue(k + 1).
        smallest = dist.topk(top + 1, dim=1, largest=False, sorted=True).values
        radii[start : start + len(dist)] = smallest[:, columns]

    _for_row_batches(features, features, visit)
    return radii[:, 0] if isinstance(ks, int) else tuple(radii[:, i] for i in range(len(wanted)))


def manifold_metrics(gen: np.ndarray, ref: np.ndarray, pr_k: int = PR_K, dc_k: int = DC_K, device: str = "cpu") -> dict[str, float]:
    """Precision/recall (k=pr_k) and density/coverage (k=dc_k) from four distance passes
    (ref x ref, gen x gen, gen x ref, ref x gen) instead of seven, with the same values."""
    import torch

    g, r = _tensor(gen, device), _tensor(ref, device)
    ref_pr, ref_dc = knn_radii(r, (pr_k, dc_k))
    gen_pr = knn_radii(g, pr_k)
    inside_ref, counts = [], []

    def visit_gen(_start: int, dist: Any) -> None:
        inside_ref.append((dist <= ref_pr[None]).any(1))  # precision: in some real ball
        counts.append((dist <= ref_dc[None]).sum(1))  # density: how many real balls

    _for_row_batches(g, r, visit_gen)
    inside_gen, nearest = [], torch.full((len(r),), float("inf"), device=device)

    def visit_ref(start: int, dist: Any) -> None:
        inside_gen.append((dist <= gen_pr[None]).any(1))  # recall: real sample in some generated ball
        nearest[start : start + len(dist)] = dist.min(1).values  # coverage: nearest generated sample

    _for_row_batches(r, g, visit_ref)
    return {
        "precision": float(torch.cat(inside_ref).double().mean()),
        "recall": float(torch.cat(inside_gen).double().mean()),
        "density": float(torch.cat(counts).double().sum() / (dc_k * len(g))),
        "coverage": float((nearest <= ref_dc).double().mean()),
    }


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = PR_K, device: str = "cpu") -> dict[str, float]:
    result = manifold_metrics(gen, ref, pr_k=k, device=device)
    return {key: result[key] for key in ("precision", "recall")}


def density_coverage(gen: np.ndarray, ref: np.ndarray, k: int = DC_K, device: str = "cpu") -> dict[str, float]:
    result = manifold_metrics(gen, ref, dc_k=k, device=device)
    return {key: result[key] for key in ("density", "coverage")}


def compute(gen: Any, ref: Any, device: str = "cpu", seed: int = 0, **_: Any) -> dict[str, Any]:
    """Registry entry: equal sample counts on both sides, as the estimators assume."""
    from distilgan.utils.noise import rng

    ref_feats = ref.require_features("pr")
    n = min(len(gen.features), len(ref_feats))
    generator = rng(seed, 0x9E)
    g = gen.features if len(gen.features) == n else gen.features[np.sort(generator.choice(len(gen.features), n, replace=False))]
    r = ref_feats if len(ref_feats) == n else ref_feats[np.sort(generator.choice(len(ref_feats), n, replace=False))]
    result: dict[str, Any] = manifold_metrics(g, r, device=device)
    result.update({"pr_k": PR_K, "dc_k": DC_K, "pr_samples": n})
    return result
