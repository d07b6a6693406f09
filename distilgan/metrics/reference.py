"""Reference statistics: computed once per (dataset, split, count, network), saved as one .npz.

Contents: ``mu``/``sigma`` (float64, FID), ``features`` (float32, for KID, precision/recall,
density/coverage and the per-class statistics of intra-class FID), ``labels``, ``class_mu`` and
``class_count``, and ``meta_json`` (dataset fingerprint and description, split, count, network
name and hashes, resize method, indices hash). Plain arrays only: loaded with allow_pickle=False.

A cache under ``~/.cache/distilgan/stats`` (``DISTILGAN_CACHE`` overrides ``~/.cache/distilgan``)
is keyed by dataset fingerprint + split + n + network sha256 (+ the feature precision when it is not
fp32), so ``eval --ref DATASET`` reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.metrics.fid import feature_stats

FORMAT = "distilgan-reference-stats/1"


@dataclass
class FeatureSet:
    """What the metrics see of the images under evaluation."""

    features: np.ndarray  # float32 (N, D)
    labels: np.ndarray | None = None  # int64 (N,)
    probs: np.ndarray | None = None  # Inception softmax (N, 1008), when the network has logits
    class_probs: np.ndarray | None = None  # a classifier's softmax, for the classifier score
    classifier_name: str | None = None
    teacher_features: np.ndarray | None = None  # for fidelity to the teacher


@dataclass
class Reference:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    labels: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.meta.get("count", 0))

    def require_features(self, metric: str) -> np.ndarray:
        if self.features is None:
            raise UserError(f"metric '{metric}' needs reference features, but this reference file has only mu/sigma "
                            "(recompute it with `distilgan stats`)")
        return self.features


def reference_from_features(features: np.ndarray, labels: np.ndarray | None, meta: dict[str, Any]) -> Reference:
    mu, sigma = feature_stats(features)
    meta = dict(meta, count=int(len(features)), feature_dim=int(features.shape[1]))
    return Reference(mu=mu, sigma=sigma, features=np.asarray(features, np.float32), labels=labels, meta=meta)


def save_reference(ref: Reference, path: str | os.PathLike) -> Path:
    """Atomic .npz write (numpy would append .npz to a temporary name, so write through a handle)."""
    from distilgan.utils.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "mu": np.asarray(ref.mu, np.float64),
        "sigma": np.asarray(ref.sigma, np.float64),
        "meta_json": np.array(json.dumps(ref.meta, sort_keys=True)),
    }
    if ref.features is not None:
        arrays["features"] = np.asarray(ref.features, np.float32)
    if ref.labels is not None:
        labels = np.asarray(ref.labels, np.int64)
        arrays["labels"] = labels
        if ref.features is not None:
            classes = np.unique(labels)
            arrays["class_ids"] = classes
            arrays["class_count"] = np.array([(labels == c).sum() for c in classes], np.int64)
            arrays["class_mu"] = np.stack([ref.features[labels == c].mean(0, dtype=np.float64) for c in classes])
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def is_reference_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    if not (path.is_file() and path.suffix == ".npz" and zipfile.is_zipfile(path)):
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return "mu" in data.files and "sigma" in data.files
    except (OSError, ValueError):
        return False


def load_reference(path: str | os.PathLike) -> Reference:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference statistics not found: {path} (make them with `distilgan stats DATASET --out {path.name}`)")
    if not zipfile.is_zipfile(path):
        from distilgan.utils.npz import npz_problem

        raise UserError(f"not reference statistics: {npz_problem(path)}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data.files or "sigma" not in data.files:
                raise UserError(f"{path} has no mu/sigma arrays; it is not a reference statistics file (use `distilgan stats`)")
            meta = json.loads(str(data["meta_json"])) if "meta_json" in data.files else {"count": 0, "note": "foreign stats"}
            return Reference(
                mu=data["mu"].astype(np.float64),
                sigma=data["sigma"].astype(np.float64),
                features=data["features"] if "features" in data.files else None,
                labels=data["labels"] if "labels" in data.files else None,
                meta=meta,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        from distilgan.utils.npz import npz_problem

        raise UserError(f"not reference statistics: {npz_problem(path, err)}") from None


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILGAN_CACHE", Path.home() / ".cache" / "distilgan")).expanduser() / "stats"


def cache_path(dataset_fingerprint: str, split: str, n: int | None, network_sha256: str) -> Path:
    key = f"{dataset_fingerprint}|{split}|{n if n else 'all'}|{network_sha256}"
    return cache_dir() / f"ref-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


CHUNK = 1000  # images per resumable piece of a long feature run


def _features_resumable(network: Any, images: np.ndarray, batch_size: int, progress: bool, partial: Path | None) -> np.ndarray:
    """Features in chunks saved under ``partial`` so a killed multi-hour CPU run resumes where it stopped."""
    from distilgan.metrics.network import extract
    from distilgan.utils.atomic import atomic_path
    from distilgan.utils.progress import progress_bar

    if partial is None or len(images) <= CHUNK:
        return extract(network, images, batch_size=batch_size, progress=progress, desc="reference features")[0]
    partial.mkdir(parents=True, exist_ok=True)
    chunks = []
    with progress_bar(total=len(images), desc="reference features", unit="img", disable=not progress) as bar:
        for start in range(0, len(images), CHUNK):
            file = partial / f"chunk-{start:08d}-{min(start + CHUNK, len(images)):08d}.npy"
            if file.is_file():
                chunk = np.load(file)
            else:
                chunk = extract(network, images[start : start + CHUNK], batch_size=batch_size, progress=False)[0]
                with atomic_path(file) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, chunk)
            chunks.append(chunk)
            bar.update(len(chunk))
    return np.concatenate(chunks)


def compute_dataset_reference(
    dataset: Any, split: str, n: int | None, network: Any, batch_size: int = 64, progress: bool = True,
    partial: Path | None = None,
) -> Reference:
    """Features of (a seeded subset of) a dataset and the metadata that pins the protocol."""
    started = time.time()
    fingerprint = dataset.fingerprint()  # of the whole split: the cache key
    if n is not None and n < 2:
        raise UserError(f"--n {n} is too small; statistics need at least 2 images")
    subset: Any = "all"
    if n is not None and n < len(dataset):
        subset = {"n": int(n), "seed": 0, "method": "ImageDataset.take", "of": len(dataset)}
        dataset = dataset.take(n, seed=0)  # seeded subset: dataset order is often class-sorted
    labels = None if getattr(dataset, "labels", None) is None else np.asarray(dataset.labels, np.int64)
    features = _features_resumable(network, dataset.images, batch_size, progress, partial)
    meta = {
        "format": FORMAT,
        "dataset": _jsonable(dataset.describe()) if hasattr(dataset, "describe") else {},
        "dataset_fingerprint": fingerprint,
        "split": split,
        "n_requested": n,
        "subset": subset,
        "class_names": list(getattr(dataset, "class_names", None) or []),
        "network": network.describe(),
        "resize": network.resize,
        "seconds": round(time.time() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return reference_from_features(features, labels, meta)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def reference_for_dataset(
    spec: str, split: str, n: int | None, network: Any, batch_size: int = 64, use_cache: bool = True, progress: bool = True,
) -> tuple[Reference, Path, bool]:
    """(reference, cache file, whether it came from the cache); computes and caches on a miss."""
    from distilgan.data.datasets import open_dataset

    dataset = open_dataset(spec, split)
    if n is not None and n >= len(dataset):
        n = None  # "all of it": one cache entry however it was asked for
    # fp32 features (torch or OpenVINO: equal to 1e-7 in FID) share one entry; bf16 features get their own
    precision = getattr(network, "precision", "fp32")
    path = cache_path(dataset.fingerprint(), split, n, network.sha256 if precision == "fp32" else f"{network.sha256}|{precision}")
    if use_cache and path.is_file():
        return load_reference(path), path, True
    partial = path.with_suffix(".partial")  # keyed like the cache file, so only the same run resumes
    ref = compute_dataset_reference(dataset, split, n, network, batch_size=batch_size, progress=progress, partial=partial)
    ref.meta["dataset_spec"] = spec
    save_reference(ref, path)
    shutil.rmtree(partial, ignore_errors=True)
    return ref, path, False
