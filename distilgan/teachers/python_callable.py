"""``python:MODULE:CALLABLE`` — any Python object that maps (z, labels) to images.

The contract for a user's callable (see docs/teachers.md for a full example)::

    class MyTeacher(torch.nn.Module):      # or any object with __call__
        z_dim = 128; num_classes = 10; resolution = 32; channels = 3   # channels optional (probed)
        class_names = [...]                # optional
        def forward(self, z, labels):      # z float32 (N, z_dim), labels int64 (N,)
            return images                  # (N, C, H, W), torch tensor or numpy array

    def build(): return MyTeacher()        # CALLABLE may be this factory or the object itself

nn.Modules get torch tensors on ``device`` (under ``torch.inference_mode``); other objects get
numpy arrays unless the option ``inputs=torch`` says otherwise.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from distilgan.errors import UserError
from distilgan.teachers.adapter import CallableTeacher, fill_metadata, module_fingerprint, take_options, torch_device
from distilgan.teachers.base import Teacher
from distilgan.utils.hashing import sha256_file

def import_target(location: str) -> tuple[Any, Path | None]:
    """``pkg.module:NAME`` or ``path/to/file.py:NAME`` -> (object, source file)."""
    module_part, sep, attr = location.rpartition(":")
    if not sep or not module_part or not attr:
        raise UserError(f"python teacher '{location}' must be MODULE:CALLABLE or path/to/file.py:CALLABLE")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"python teacher file not found: {module_part} (check the path)")
        name = f"distilgan_user_teacher_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
        try:
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        finally:
            sys.path.remove(str(path.parent))
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as err:
            raise UserError(f"cannot import module '{module_part}': {err} (check the name or PYTHONPATH)") from None
    if not hasattr(module, attr):
        raise UserError(f"module '{module_part}' has no attribute '{attr}'")
    source = inspect.getsourcefile(module) if hasattr(module, "__file__") else None
    return getattr(module, attr), Path(source) if source else None


def load(location: str, **options: Any) -> Teacher:
    """Options: the common ones, plus ``inputs`` (torch|numpy), ``label_encoding`` (int|onehot),
    ``batch_size``, ``factory_kwargs`` (dict for the factory), ``z_dim``/``num_classes``/``resolution``
    when the object lacks them."""
    opts = take_options(
        options,
        "python",
        {"inputs": None, "label_encoding": "int", "batch_size": 256, "factory_kwargs": None,
         "z_dim": None, "num_classes": None, "resolution": None},
    )
    target, source = import_target(location)
    is_teacher_object = callable(target) and not inspect.isclass(target) and hasattr(target, "z_dim")
    obj = target if is_teacher_object else None
    if obj is None:
        if not callable(target):
            raise UserError(f"python teacher '{location}' is neither a factory nor a callable object")
        obj = target(**(opts["factory_kwargs"] or {}))
    if not callable(obj):
        raise UserError(f"python teacher '{location}' gave a {type(obj).__name__}, which cannot be called")

    is_module = False
    if "torch" in sys.modules:
        import torch

        is_module = isinstance(obj, torch.nn.Module)
        if is_module:
            obj = obj.to(torch_device(opts["device"])).eval()

    def fingerprint() -> str:
        digest = hashlib.sha256()
        if source is not None and source.is_file():
            digest.update(sha256_file(source).encode())
        return module_fingerprint(obj, digest) if is_module else digest.hexdigest()

    teacher = CallableTeacher(
        obj,
        device=opts["device"],
        inputs=opts["inputs"] or ("torch" if is_module else "numpy"),
        label_encoding=opts["label_encoding"],
        batch_size=opts["batch_size"],
        fingerprint_fn=fingerprint,
    )
    fill_metadata(teacher, obj, opts, f"python:{location}")
    return teacher
