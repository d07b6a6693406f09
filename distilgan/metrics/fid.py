"""Fréchet Inception Distance (Heusel et al. 2017) from float64 feature statistics.

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

The trace of the matrix square root is the only delicate part. We compute it from the
eigenvalues of sqrt(S1) S2 sqrt(S1), which is symmetric positive semi-definite and has the same
eigenvalues as S1 S2; that is stable even when the covariances are rank-deficient (fewer
samples than 2048 dimensions), where ``scipy.linalg.sqrtm(S1 @ S2)`` can return large imaginary
parts. ``scipy.linalg.sqrtm`` is kept as a cross-check (``method="sqrtm"``), as in the reference
implementations, with their check that imaginary parts are negligible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.extras import need


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) in float64; sigma is the unbiased covariance (np.cov, rowvar=False)."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise UserError(f"need at least 2 feature vectors for FID statistics, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _clean_eigenvalues(values: np.ndarray) -> np.ndarray:
    # Rank-deficient covariances (n < 2048) have round-off eigenvalues of +-1e-13 instead of 0;
    # their square roots would add up to a visible bias, so zero everything below 1e-10 * max.
    return np.where(values > 1e-10 * max(values.max(initial=0.0), 0.0), values, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(_clean_eigenvalues(values))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "eigh") -> float:
    """tr((sigma1 @ sigma2)^(1/2)) for symmetric PSD sigma1, sigma2."""
    if method == "eigh":
        root1 = _psd_sqrt(sigma1)
        middle = root1 @ sigma2 @ root1
        values = np.linalg.eigvalsh((middle + middle.T) / 2)
        return float(np.sqrt(_clean_eigenvalues(values)).sum())
    if method == "sqrtm":
        need("scipy")
        import scipy.linalg

        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if isinstance(covmean, tuple):  # old scipy returned (sqrtm, errest) with disp=False
            covmean = covmean[0]
        if not np.isfinite(covmean).all():
            # Singular product: nudge the diagonals as pytorch-fid does, then retry.
            offset = np.eye(len(sigma1)) * 1e-6
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            # Tiny imaginary parts are round-off; large ones mean the estimate is unusable.
            worst = float(np.max(np.abs(covmean.imag)))
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"sqrtm returned an imaginary component of {worst:.3g}; use method='eigh'")
            covmean = covmean.real
        return float(np.trace(covmean))
    raise ValueError(f"unknown method {method!r}")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigh") -> float:
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise UserError(f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                        f"{sigma2.shape} (were both computed with the same feature network?)")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2, method)
    return max(float(value), 0.0)  # round-off can give -1e-12 for identical statistics


def fid_between_features(x: np.ndarray, y: np.ndarray) -> float:
    """FID of two feature sets; exact and fast when a set has fewer samples than dimensions.

    With centred features A (n x d) and B (m x d), S1 = A'A/(n-1) and S2 = B'B/(m-1), so the
    nonzero eigenvalues of S1 S2 are the squared singular values of A B' / sqrt((n-1)(m-1)):
    tr((S1 S2)^(1/2)) is the nuclear norm of an n x m matrix instead of a d x d square root.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise UserError(f"FID needs two feature matrices of equal width with >= 2 rows, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) >= x.shape[1]:
        return frechet_distance(*feature_stats(x), *feature_stats(y))
    if max(len(x), len(y)) > x.shape[1]:
        return _fid_one_small_set(x, y)
    mu1, mu2 = x.mean(0), y.mean(0)
    a, b = x - mu1, y - mu2
    scale1, scale2 = 1.0 / (len(x) - 1), 1.0 / (len(y) - 1)
    cross = (a @ b.T) * np.sqrt(scale1 * scale2)
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum()
    diff = mu1 - mu2
    value = diff @ diff + (a * a).sum() * scale1 + (b * b).sum() * scale2 - 2 * trace_sqrt
    return max(float(value), 0.0)


def _fid_one_small_set(x: np.ndarray, y: np.ndarray) -> float:
    """FID when one set has fewer samples (n) than dimensions (d) and the other more (m), as in
    intra-class FID (1,000 generated vs 5,000 real per class): with the small set centred as A,
    the nonzero eigenvalues of S_small S_big are those of the n x n matrix A S_big A' / (n-1),
    so one n x n eigvalsh replaces two d x d eigendecompositions (~5x faster at n 1,000, d 2,048)."""
    small, big = (x, y) if len(x) < len(y) else (y, x)
    mu_small, (mu_big, sigma_big) = small.mean(0), feature_stats(big)
    a = small - mu_small
    gram = (a @ sigma_big @ a.T) / (len(small) - 1)
    trace_sqrt = float(np.sqrt(_clean_eigenvalues(np.linalg.eigvalsh((gram + gram.T) / 2))).sum())
    diff = mu_small - mu_big
    value = diff @ diff + (a * a).sum() / (len(small) - 1) + np.trace(sigma_big) - 2 * trace_sqrt
    return max(float(value), 0.0)


def fid_from_features(gen_features: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray) -> float:
    mu, sigma = feature_stats(gen_features)
    return frechet_distance(mu, sigma, ref_mu, ref_sigma)


def compute(gen: Any, ref: Any, **_: Any) -> dict[str, Any]:
    """Registry entry: FID of generated features against the reference statistics."""
    return {"fid": fid_from_features(gen.features, ref.mu, ref.sigma), "n_gen": len(gen.features), "n_ref": ref.count}
