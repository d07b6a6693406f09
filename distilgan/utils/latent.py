"""The input space a generator samples from: its z distribution and its class subset, with overrides.

Every consumer of a model (generate, the Python API, eval, serve, export's INT8 calibration, prune/QAT
fine-tuning, calibration sources) asks here, so they all default to what the model was trained on
and read a user's ``--truncation`` / ``--truncation-kind`` the same way. Works on anything with the
attributes (a distilgan model, a serving backend, an exported model's facts); torch-free.
"""

from __future__ import annotations

from typing import Any, Mapping

from distilgan.errors import UserError
from distilgan.utils.noise import Z_KINDS, ZDistribution

# kinds a user may ask for with a threshold (--truncation-kind)
TRUNCATION_KINDS = tuple(kind for kind in Z_KINDS if kind != "normal")


def as_distribution(value: Any) -> ZDistribution:
    """A ZDistribution from one, from its ``to_dict()`` form, or None (= normal)."""
    if isinstance(value, ZDistribution):
        return value
    if value is None or isinstance(value, Mapping):
        try:
            return ZDistribution.from_dict(value)
        except (TypeError, ValueError) as err:
            raise UserError(f"invalid z distribution {dict(value or {})} ({err})") from None
    raise UserError(f"invalid z distribution {value!r} (give a dict such as {{'kind': 'truncated', 'threshold': 1.0}})")


def model_z_distribution(model: Any) -> ZDistribution:
    """The z distribution ``model`` was trained on (``model.z_distribution``), else N(0, I)."""
    return as_distribution(getattr(model, "z_distribution", None))


def model_classes(model: Any) -> list[int]:
    """The classes ``model`` was trained on, in label order (``model.classes``), else all of them."""
    classes = getattr(model, "classes", None)
    return [int(c) for c in classes] if classes else list(range(int(model.num_classes)))


def choose_distribution(base: ZDistribution, truncation: float | None = None, kind: str | None = None) -> ZDistribution:
    """``base`` (the model's) unless overridden.

    ``truncation`` alone keeps the model's kind with a new threshold (``truncated``, the BigGAN paper's,
    when the model's z is normal); ``kind`` alone keeps the model's threshold; ``kind="normal"`` asks
    for plain N(0, I).
    """
    if kind is not None and kind not in Z_KINDS:
        raise UserError(f"unknown truncation kind '{kind}' (choose from {', '.join(Z_KINDS)})")
    if truncation is not None:
        if not truncation > 0:
            raise UserError(f"truncation must be > 0, got {truncation} (it is the threshold t of the z distribution)")
        if kind == "normal":
            raise UserError("truncation kind 'normal' takes no truncation threshold (drop one of them)")
        chosen = kind or (base.kind if base.kind != "normal" else "truncated")
        return ZDistribution(chosen, float(truncation))
    if kind is None or kind == base.kind:
        return base
    if kind == "normal":
        return ZDistribution()
    if base.threshold is None:
        raise UserError(f"truncation kind '{kind}' needs a threshold: this model's z is normal (add --truncation T)")
    return ZDistribution(kind, base.threshold)


__all__ = ["TRUNCATION_KINDS", "as_distribution", "choose_distribution", "model_classes", "model_z_distribution"]
