"""Student models and the registry that loads any saved one by its ``architecture`` name."""

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
from distilgan.models.pruned import PrunedDiStyleGANGenerator
from distilgan.models.student import DiStyleGANDiscriminator, DiStyleGANGenerator

# config.json "architecture" -> class
ARCHITECTURES: dict[str, type[PretrainedMixin]] = {
    "DiStyleGANGenerator": DiStyleGANGenerator,
    "DiStyleGANDiscriminator": DiStyleGANDiscriminator,
    "PrunedDiStyleGANGenerator": PrunedDiStyleGANGenerator,
    "BigGANGenerator": BigGANGenerator,
    "BigGANDiscriminator": BigGANDiscriminator,
}


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
    "PretrainedMixin",
    "PrunedDiStyleGANGenerator",
    "builtin_names",
    "load_pretrained",
    "resolve_checkpoint",
]
