"""``distilgan:DIR`` — a distilgan checkpoint folder (config.json + model.safetensors) as a teacher.

Useful to distil a student further (a smaller student from a bigger one) or to compare a student
with its teacher through the same code path. Loaded with ``distilgan.models.load_pretrained``,
which reads only JSON and safetensors (no pickle). The generator contract (docs/design.md):
``forward(z, labels long) -> NCHW in [-1, 1]`` and attributes ``z_dim``, ``num_classes``,
``resolution``, ``channels``, ``class_names``. ``truncation`` here is a truncated-normal threshold
applied to z by the sampler (``native_truncation=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilgan.errors import UserError
from distilgan.teachers.base import Teacher
from distilgan.teachers.adapter import (
    CallableTeacher,
    apply_common,
    take_options,
    torch_device,
)
from distilgan.utils.hashing import sha256_tree


def load(location: str, **options: Any) -> Teacher:
    """Options: the common ones plus ``batch_size`` (default 256)."""
    opts = take_options(options, "distilgan", {"batch_size": 256})
    folder = Path(location).expanduser()
    if not folder.is_dir():
        raise UserError(f"distilgan checkpoint folder not found: {location} (give the folder holding config.json)")
    if not (folder / "config.json").is_file():
        raise UserError(f"{location} has no config.json (is it a distilgan checkpoint folder?)")
    torch_device(opts["device"])  # a clear error before anything is loaded
    from distilgan.models import load_pretrained

    model = load_pretrained(folder, device=opts["device"])
    model.eval()
    teacher = CallableTeacher(
        model,
        device=opts["device"],
        inputs="torch",
        label_encoding="int",
        batch_size=opts["batch_size"],
        fingerprint_fn=lambda: sha256_tree(folder),
    )
    for attr in ("z_dim", "num_classes", "resolution", "channels"):
        value = getattr(model, attr, None)
        if value is None:
            raise UserError(f"the model in {location} has no '{attr}' attribute (not a distilgan generator?)")
        setattr(teacher, attr, int(value))
    names = getattr(model, "class_names", None)
    teacher.class_names = [str(n) for n in names] if names is not None else None
    apply_common(teacher, opts)
    return teacher
