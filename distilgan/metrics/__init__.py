"""Evaluation metrics on Inception features, one file per metric, looked up by name.

Every metric is ``compute(gen: FeatureSet, ref: Reference, **options) -> dict`` (see reference.py);
the eval command adds the protocol (network and hash, resize, counts, reference set, seed).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from distilgan.errors import UserError

# name -> "module:function"; names match `distilgan eval --metrics`.
METRICS: dict[str, str] = {
    "fid": "distilgan.metrics.fid:compute",
    "kid": "distilgan.metrics.kid:compute",
    "pr": "distilgan.metrics.pr:compute",  # precision/recall (k=3) + density/coverage (k=5)
    "ifid": "distilgan.metrics.ifid:compute",
    "is": "distilgan.metrics.inception_score:compute_is",
    "cs": "distilgan.metrics.inception_score:compute_cs",
    "fidelity": "distilgan.metrics.fidelity:compute",
    "ca": "distilgan.metrics.class_agreement:compute",  # a fixed CIFAR-10 classifier agrees with the requested class
}


def get_metric(name: str) -> Callable[..., dict[str, Any]]:
    if name not in METRICS:
        raise UserError(f"unknown metric '{name}' (choose from {', '.join(METRICS)})")
    module_name, func = METRICS[name].split(":")
    return getattr(importlib.import_module(module_name), func)


__all__ = ["METRICS", "get_metric"]
