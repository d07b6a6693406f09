"""``torchscript:PATH`` — a scripted or traced generator saved with ``torch.jit.save``.

Called as ``module(z, labels)`` with z float32 (N, z_dim) and labels int64 (N,) — or a float
one-hot (N, num_classes) with ``label_encoding=onehot`` — on ``device``, under
``torch.inference_mode()``. ``z_dim``, ``num_classes``, ``resolution`` and ``channels`` are read
from the module's attributes when it kept them (``torch.jit.script`` keeps plain int attributes,
``torch.jit.trace`` does not), otherwise from options; resolution and channels are probed last.
"""

from __future__ import annotations

from typing import Any

from distilgan.errors import UserError
from distilgan.teachers.base import Teacher, require_file
from distilgan.teachers.adapter import CallableTeacher, fill_metadata, take_options, torch_device
from distilgan.utils.hashing import sha256_file


def load(location: str, **options: Any) -> Teacher:
    """Options: the common ones, plus ``label_encoding`` (int|onehot), ``batch_size`` (default 256),
    and ``z_dim``/``num_classes``/``resolution`` for modules that do not carry them."""
    opts = take_options(
        options,
        "torchscript",
        {"label_encoding": "int", "batch_size": 256, "z_dim": None, "num_classes": None, "resolution": None},
    )
    path = require_file(location, "TorchScript teacher file")
    import torch

    device = torch_device(opts["device"])
    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{location} is not a TorchScript file ({first_line[:120]}); save it with torch.jit.save, "
            "or use python:MODULE:CALLABLE for a plain checkpoint"
        ) from None
    module.eval()
    teacher = CallableTeacher(
        module,
        device=opts["device"],
        inputs="torch",
        label_encoding=opts["label_encoding"],
        batch_size=opts["batch_size"],
        fingerprint_fn=lambda: sha256_file(path),
    )
    fill_metadata(teacher, module, opts, f"torchscript:{location}")
    return teacher
