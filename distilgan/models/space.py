"""What a generator was trained on, recorded in its config.json so that it travels with the weights.

``z_distribution`` (a ``ZDistribution.to_dict()``), ``classes`` (the class subset in label order;
None = all) and ``teacher_fingerprint`` are constructor arguments of every generator, so
``PretrainedMixin`` saves and loads them like any other. A config.json written before them loads
with the defaults they imply (z ~ N(0, I), all classes), and says so once, in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from distilgan.errors import UserError
from distilgan.utils.noise import ZDistribution

SPACE_KEYS = ("z_distribution", "classes", "teacher_fingerprint")
_noticed: set[str] = set()  # one notice per checkpoint folder and process


def check_space(num_classes: int, z_distribution: Mapping[str, Any] | None, classes: Sequence[int] | None,
                teacher_fingerprint: str | None) -> dict[str, Any]:
    """The three settings validated and in their config.json form (one-line UserError otherwise)."""
    try:
        distribution = ZDistribution.from_dict(z_distribution).to_dict()
    except (TypeError, ValueError, AttributeError) as err:
        raise UserError(f"invalid z_distribution {z_distribution!r} ({err})") from None
    chosen: list[int] | None = None
    if classes is not None:
        try:
            chosen = [int(c) for c in classes]
        except (TypeError, ValueError):
            raise UserError(f"classes must be class indices, got {classes!r}") from None
        bad = [c for c in chosen if not 0 <= c < num_classes]
        if not chosen or bad or len(set(chosen)) != len(chosen):
            raise UserError(f"classes {chosen} must be distinct indices in 0..{num_classes - 1} (None = all classes)")
    if teacher_fingerprint is not None and not isinstance(teacher_fingerprint, str):
        raise UserError(f"teacher_fingerprint must be a string, got {type(teacher_fingerprint).__name__}")
    return {"z_distribution": distribution, "classes": chosen, "teacher_fingerprint": teacher_fingerprint}


class GeneratorSpace:
    """Mixin for generators: ``z_distribution`` / ``classes`` / ``teacher_fingerprint``, kept in the
    config (so ``save_pretrained`` writes them); setting one validates it and updates the config."""

    config: dict[str, Any]
    num_classes: int

    def _space(self, z_distribution: Mapping[str, Any] | None, classes: Sequence[int] | None,
               teacher_fingerprint: str | None) -> dict[str, Any]:
        """The validated config entries (record them with ``_config_override``)."""
        return check_space(self.num_classes, z_distribution, classes, teacher_fingerprint)

    def _update_space(self, **changes: Any) -> None:
        space = {key: self.config.get(key) for key in SPACE_KEYS}
        space.update(changes)
        self.config.update(check_space(self.num_classes, **space))

    @property
    def z_distribution(self) -> ZDistribution:
        """The latent distribution the model was trained on (every sampler's default)."""
        return ZDistribution.from_dict(self.config.get("z_distribution"))

    @z_distribution.setter
    def z_distribution(self, value: ZDistribution | Mapping[str, Any] | None) -> None:
        self._update_space(z_distribution=value.to_dict() if isinstance(value, ZDistribution) else value)

    @property
    def classes(self) -> list[int] | None:
        """The class subset it was trained on, in label order; None = all classes."""
        classes = self.config.get("classes")
        return None if classes is None else list(classes)

    @classes.setter
    def classes(self, value: Sequence[int] | None) -> None:
        self._update_space(classes=value)

    @property
    def teacher_fingerprint(self) -> str | None:
        return self.config.get("teacher_fingerprint")

    @teacher_fingerprint.setter
    def teacher_fingerprint(self, value: str | None) -> None:
        self._update_space(teacher_fingerprint=value)

    @classmethod
    def _on_load(cls, folder: Path, config: dict[str, Any]) -> None:
        missing = [key for key in ("z_distribution", "classes") if key not in config]
        if not missing or _is_builtin(folder) or str(folder.resolve()) in _noticed:
            return
        _noticed.add(str(folder.resolve()))
        count = config.get("num_classes", "its")
        print(f"distilgan: note: {folder} predates {missing[0]}: assuming z ~ N(0, I) and all {count} classes "
              "(re-save it to record them)", file=sys.stderr, flush=True)


def _is_builtin(folder: Path) -> bool:
    # shipped checkpoints: their config.json is part of the teacher fingerprint, so it stays as shipped
    from distilgan.models.pretrained import PRETRAINED_ROOT

    return folder.resolve().parent == PRETRAINED_ROOT.resolve()
