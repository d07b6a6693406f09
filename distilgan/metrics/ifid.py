"""Intra-class FID (Miyato & Koyama 2018): FID between generated and real images of each class.

The per-class reference statistics come from the stored reference features and labels, so one
reference file serves FID, KID, precision/recall and intra-class FID alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.metrics.fid import fid_between_features


def intra_class_fid(
    gen_features: np.ndarray, gen_labels: np.ndarray, ref_features: np.ndarray, ref_labels: np.ndarray,
    progress: bool = False,
) -> dict[str, Any]:
    from distilgan.utils.progress import progress_bar

    gen_labels, ref_labels = np.asarray(gen_labels), np.asarray(ref_labels)
    classes = [int(c) for c in np.unique(gen_labels)]
    per_class: dict[str, float] = {}
    for c in progress_bar(classes, desc="intra-class FID", disable=not progress, leave=False):
        g, r = gen_features[gen_labels == c], ref_features[ref_labels == c]
        if len(g) < 2 or len(r) < 2:
            raise UserError(f"class {c} has {len(g)} generated and {len(r)} reference samples; intra-class FID needs >= 2 of each")
        per_class[str(c)] = fid_between_features(g, r)
    return {"ifid": float(np.mean(list(per_class.values()))), "ifid_per_class": per_class}


def compute(gen: Any, ref: Any, progress: bool = False, **_: Any) -> dict[str, Any]:
    if gen.labels is None:
        raise UserError("intra-class FID needs labels for the generated images (images without labels cannot be scored per class)")
    if ref.labels is None:
        raise UserError("the reference statistics have no labels; recompute them with `distilgan stats` on a labelled dataset")
    return intra_class_fid(gen.features, gen.labels, ref.require_features("ifid"), ref.labels, progress=progress)
