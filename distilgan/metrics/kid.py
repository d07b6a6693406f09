"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a cubic polynomial kernel.

k(x, y) = (x·y / d + 1)^3. The standard protocol averages the estimate over 100 random subsets of
1000 generated and 1000 reference features. :func:`kernel_inception_distance` takes the subset size
it is given (capped at min(n_gen, n_ref)); the eval metric (:func:`compute`) uses
:func:`subset_size_for`, min(1000, n // 2) with n = min(n_gen, n_ref), so that small sets still draw
different subsets: subsets as large as the set would all be the whole set, and the std over them
would read 0. We report the mean and the standard deviation over subsets, and the subset size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.noise import rng

NUM_SUBSETS = 100
SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between two equal-size samples (diagonals of the within-set kernels dropped)."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    gen: np.ndarray, ref: np.ndarray, num_subsets: int = NUM_SUBSETS, subset_size: int = SUBSET_SIZE, seed: int = 0
) -> dict[str, Any]:
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise UserError(f"KID needs two feature matrices of equal width, got {gen.shape} and {ref.shape}")
    m = min(len(gen), len(ref), subset_size)
    if m < 2:
        raise UserError(f"KID needs at least 2 samples per set, got {len(gen)} generated and {len(ref)} reference")
    generator = rng(seed, 0x4B1D)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = gen[generator.choice(len(gen), m, replace=False)]
        y = ref[generator.choice(len(ref), m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return {"kid": float(values.mean()), "kid_std": float(values.std()), "kid_subsets": num_subsets, "kid_subset_size": m}


def subset_size_for(n_gen: int, n_ref: int) -> int:
    """The protocol's 1000, or half the smaller set when that is smaller (at least 2)."""
    return max(2, min(SUBSET_SIZE, min(n_gen, n_ref) // 2))


def compute(gen: Any, ref: Any, seed: int = 0, **_: Any) -> dict[str, Any]:
    from distilgan.utils.progress import note

    ref_features = ref.require_features("kid")
    size = subset_size_for(len(gen.features), len(ref_features))
    if size < SUBSET_SIZE:
        note(f"KID uses subsets of {size} (half of {min(len(gen.features), len(ref_features))} samples) instead of the "
             f"protocol's {SUBSET_SIZE}, which needs {2 * SUBSET_SIZE} samples per set: not comparable with published KID")
    return kernel_inception_distance(gen.features, ref_features, subset_size=size, seed=seed)
