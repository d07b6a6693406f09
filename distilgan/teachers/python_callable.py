"""``python:MODULE:CALLABLE`` — any Python object that maps (z, labels) to images.

The contract for a user's callable (see docs/teachers.md for a full example)::

    class MyTeacher(torch.nn.Module):      # or any object with __call__
        z_dim = 128; num_classes = 10; resolution = 32; channels = 3   # channels optional (probed)
        class_names = [...]                # optional
        def forward(self, z, labels):      # z float32 (N, z_dim), labels int64 (N,)
            return images                  # (N, C, H, W), torch tensor or numpy array

    def build(): return MyTeacher()        # CALLABLE may be this factory or the object itself

An nn.Module *class* named as CALLABLE is built (twice, under two torch seeds) and refused when its
weights depend on the seed: that is a freshly initialised, untrained network, not a teacher.

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


def _random_weights(first: Any, second: Any) -> bool:
    """Whether two builds of one nn.Module class, under different torch seeds, differ in a tensor."""
    import torch

    a, b = first.state_dict(), second.state_dict()
    return any(isinstance(t, torch.Tensor) and (t.shape != b[k].shape or not torch.equal(t, b[k]))
               for k, t in a.items() if k in b)


def _build(target: Any, kwargs: dict[str, Any], location: str) -> Any:
    """Call the factory. An nn.Module *class* named as CALLABLE is built twice under two torch seeds:
    weights that differ are a fresh random initialisation, an untrained network, and are refused."""
    torch = sys.modules.get("torch")
    if not (inspect.isclass(target) and torch is not None and issubclass(target, torch.nn.Module)):
        return target(**kwargs)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG streams as they were
        torch.manual_seed(0x5EED)
        obj = target(**kwargs)
        torch.manual_seed(0x5EED + 1)
        again = target(**kwargs)
    if _random_weights(obj, again):
        raise UserError(
            f"python teacher '{location}' is an nn.Module class whose weights change with the random seed: "
            f"{target.__name__}(...) builds an untrained network; name a factory that loads the trained weights "
            f"(def build(): m = {target.__name__}(); m.load_state_dict(torch.load(...)); return m) or an instance"
        )
    del again
    return obj


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
        obj = _build(target, opts["factory_kwargs"] or {}, location)
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
