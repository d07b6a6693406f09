"""Class names or indices -> int64 label indices: the one resolver behind the CLI, the Python API,
the store's ``--classes`` and the server (torch-free, so the edge runtime uses it too).

``strict`` is how literally a label is read: strict (the API, the server) takes exact names, ints and
digit strings only; lenient (what people type on a command line) also takes names in any case and
with surrounding spaces. ``allowed`` is the class space a model was trained on: a label outside it
is an error naming the allowed classes, because a generator trained on a subset makes nothing
meaningful for the others.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from distilgan.errors import UserError

SHOWN = 20  # class names listed in an error, at most


def _shown(names: Sequence[str], indices: Sequence[int] | None = None) -> str:
    picked = [names[i] for i in indices] if indices is not None else list(names)
    return ", ".join(picked[:SHOWN]) + (" ..." if len(picked) > SHOWN else "")


def resolve_labels(
    labels: Sequence[int | str] | int | str,
    class_names: Sequence[str] | None,
    num_classes: int | None = None,
    *,
    strict: bool = True,
    allowed: Sequence[int] | None = None,
    unique: bool = False,
    owner: str = "this model's",
    where: str | None = None,
) -> np.ndarray:
    """Labels (names or indices) -> int64 indices, checked; a one-line UserError otherwise.

    ``class_names`` may be None (indices only) when ``num_classes`` is given. ``unique`` refuses a
    class given twice (a class subset); ``owner`` names whose classes they are in messages
    ("the teacher's"); ``where`` prefixes each message with the item's position ("labels[2]: ...").
    """
    if isinstance(labels, (int, str, np.integer)):
        labels = [labels]
    names = [str(n) for n in class_names] if class_names else []
    count = int(num_classes) if num_classes is not None else len(names)
    if not names:
        names = [str(i) for i in range(count)]
    exact = {name: i for i, name in enumerate(names)}
    folded = {name.lower(): i for i, name in reversed(list(enumerate(names)))}  # first one wins
    allowed_set = None if allowed is None else {int(c) for c in allowed}
    indices: list[int] = []
    for position, label in enumerate(labels):
        prefix = f"{where}[{position}]: " if where else ""
        index = _one(label, exact, folded, strict)
        if index is None:
            raise UserError(f"{prefix}unknown class '{label}' ({owner} classes: {_shown(names)})")
        if not 0 <= index < count:
            raise UserError(f"{prefix}class index {index} is outside 0..{count - 1} ({owner} classes: {_shown(names)})")
        if allowed_set is not None and index not in allowed_set:
            trained = list(dict.fromkeys(int(c) for c in allowed))  # type: ignore[union-attr]
            raise UserError(f"{prefix}class '{names[index]}' ({index}) is not one the model was trained on "
                            f"(its classes: {_shown(names, trained)})")
        if unique and index in indices:
            raise UserError(f"{prefix}class '{label}' is given twice (list each class once)")
        indices.append(index)
    if not indices:
        raise UserError("no labels given (pass at least one class name or index)")
    return np.asarray(indices, dtype=np.int64)


def _one(label: object, exact: dict[str, int], folded: dict[str, int], strict: bool) -> int | None:
    """The index of one label, or None when it names no class (range is checked by the caller)."""
    if isinstance(label, bool):  # True is an int to Python, not a class to anyone
        return None
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (float, np.floating)):
        return int(label) if float(label).is_integer() else None
    if not isinstance(label, str):
        return None
    text = label if strict else label.strip()
    if text in exact:
        return exact[text]
    if not strict and text.lower() in folded:
        return folded[text.lower()]
    digits = text[1:] if not strict and text.startswith("-") else text
    if digits.isascii() and digits.isdigit():
        return int(text)
    return None


def label_indices(labels: Sequence[int | str] | int | str, class_names: Sequence[str],
                  allowed: Sequence[int] | None = None) -> np.ndarray:
    """Strict resolution against ``class_names`` (the Python API's and the edge runtime's rule)."""
    return resolve_labels(labels, class_names, strict=True, allowed=allowed)
