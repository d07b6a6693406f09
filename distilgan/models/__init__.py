"""The models the pipeline ships, and the one registry that loads any saved one by its ``architecture`` name.

Generators and discriminators (students, teachers) and the CIFAR classifiers (``classifiers/``). The
classifiers live here rather than under calibration because two stages use them: calibration (the
models being quantised) and evaluation (the judge of the class-agreement metric).
"""

from __future__ import annotations

import os
from typing import Any

from distilgan.errors import UserError
from distilgan.models.biggan import BigGANDiscriminator, BigGANGenerator
from distilgan.models.pretrained import (
    PretrainedMixin,
    builtin_names,
    read_config,
    resolve_checkpoint,
)
from distilgan.models.classifiers import CLASSIFIER_CLASSES
from distilgan.models.student import DiStyleGANDiscriminator, DiStyleGANGenerator
from distilgan.models.encoder import LatentEncoder
from distilgan.models.translator import PatchDiscriminator, UNetTranslator

# config.json "architecture" -> class, every kind of model; renamed architectures keep their old name
ARCHITECTURES: dict[str, type[PretrainedMixin]] = {
    cls.__name__: cls
    for cls in (DiStyleGANGenerator, DiStyleGANDiscriminator, BigGANGenerator, BigGANDiscriminator, *CLASSIFIER_CLASSES,
                UNetTranslator, PatchDiscriminator, LatentEncoder)
}
for _cls in list(ARCHITECTURES.values()):
    ARCHITECTURES.update({alias: _cls for alias in _cls.architecture_aliases})


def load_pretrained(name_or_dir: str | os.PathLike, device: Any = "cpu") -> Any:
    """Any saved distilgan model (a folder or a built-in name), in eval mode on ``device``."""
    folder = resolve_checkpoint(name_or_dir)
    architecture = read_config(folder)["architecture"]
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(f"{folder} holds an unknown architecture '{architecture}' (this distilgan knows: {known})")
    return cls.from_pretrained(folder, device=device)


__all__ = [
    "ARCHITECTURES",
    "BigGANDiscriminator",
    "BigGANGenerator",
    "DiStyleGANDiscriminator",
    "DiStyleGANGenerator",
    "PatchDiscriminator",
    "PretrainedMixin",
    "UNetTranslator",
    "LatentEncoder",
    "builtin_names",
    "load_pretrained",
    "resolve_checkpoint",
]
