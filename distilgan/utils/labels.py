"""Class names or indices -> int64 label indices, shared by the PyTorch and the torch-free generators."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from distilgan.errors import UserError


def label_indices(labels: Sequence[int | str] | int | str, class_names: Sequence[str]) -> np.ndarray:
    """Names (exact) or integer indices, checked against ``class_names``; one-line UserError otherwise."""
    if isinstance(labels, (int, str, np.integer)):
        labels = [labels]
    names = list(class_names)
    by_name = {name: i for i, name in enumerate(names)}
    indices = []
    for label in labels:
        if isinstance(label, str) and label in by_name:
            indices.append(by_name[label])
            continue
        try:
            index = int(label)
            if isinstance(label, (float, np.floating)) and index != label:
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"unknown class '{label}' (this model's classes: {', '.join(names)})") from None
        if not 0 <= index < len(names):
            raise UserError(f"class index {index} is outside 0..{len(names) - 1} (classes: {', '.join(names)})")
        indices.append(index)
    if not indices:
        raise UserError("no labels given (pass at least one class name or index)")
    return np.asarray(indices, dtype=np.int64)
