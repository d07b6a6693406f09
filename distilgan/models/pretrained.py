"""Save and load models as a folder: ``config.json`` + ``model.safetensors`` (never pickle).

``config.json`` holds ``"architecture"`` (the class name), the constructor arguments (including
``class_names``), the dtype the weights were saved in, and an optional free-form ``"metadata"``
dict (e.g. what the trainer wants to remember). Loading rebuilds the class from the config and
loads the weights strictly, so a config that does not match the weights is a one-line error.

A name that is not a folder is looked up among the built-in checkpoints in
``distilgan/pretrained/<name>/``.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from distilgan.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRETRAINED_ROOT = Path(__file__).resolve().parents[1] / "pretrained"
# config.json keys that are not constructor arguments
META_KEYS = ("architecture", "weights_dtype", "distilgan_version", "metadata")
SAVE_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}

M = TypeVar("M", bound="PretrainedMixin")


def builtin_names() -> list[str]:
    """Names of the checkpoints shipped in ``distilgan/pretrained/``."""
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_ROOT.iterdir() if (p / CONFIG_NAME).is_file())


def constructor_default(cls: type, name: str) -> Any:
    """The default of one constructor argument (what a run records when the user left it to the model)."""
    return inspect.signature(cls.__init__).parameters[name].default


def resolve_checkpoint(name_or_dir: str | os.PathLike) -> Path:
    """A checkpoint folder from a path (folder, or a file inside it) or a built-in name."""
    path = Path(name_or_dir).expanduser()
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        path = path.parent
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"checkpoint {name_or_dir} is a file; give the folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    names = builtin_names()
    if str(name_or_dir) in names:
        return PRETRAINED_ROOT / str(name_or_dir)
    shipped = ", ".join(names) if names else "none shipped yet"
    raise UserError(
        f"checkpoint not found: {name_or_dir} (give a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, "
        f"or a built-in name: {shipped})"
    )


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise UserError(f"{path} is missing (a checkpoint folder needs {CONFIG_NAME} and {WEIGHTS_NAME}; save it with save_pretrained)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({type(err).__name__}: {err}); re-save the checkpoint") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise UserError(f"{path} has no \"architecture\" entry (not a distilgan model config)")
    return config


def read_weights(folder: Path) -> dict[str, Any]:
    """All tensors of ``model.safetensors`` on the CPU."""
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(f"{path} is missing (a checkpoint folder needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for truncated/garbled files
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is corrupt or not a safetensors file ({detail}); re-save or re-download it") from None


def parse_device(device: Any) -> Any:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} requested but CUDA is not available (use --device cpu)")
    return dev


def _constructor_kwargs(cls: type, config: dict[str, Any], source: Path) -> dict[str, Any]:
    kwargs = {k: v for k, v in config.items() if k not in META_KEYS}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise UserError(f"{source / CONFIG_NAME} has settings {cls.__name__} does not take: {', '.join(unknown)}")
    return kwargs


def _check_weights_match(model: Any, weights: dict[str, Any], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
        raise UserError(
            f"{source / CONFIG_NAME} does not match the weights in {WEIGHTS_NAME} ({'; '.join(parts)}); "
            "the config and weights must come from the same save_pretrained call"
        )


def _apply_umask(folder: Path) -> None:
    # mkdtemp/mkstemp create private (0700/0600) entries; a shipped checkpoint should get the
    # user's usual permissions instead.
    from distilgan.utils.atomic import process_umask

    umask = process_umask()
    os.chmod(folder, 0o777 & ~umask)
    for child in folder.iterdir():
        os.chmod(child, 0o666 & ~umask)


_REGISTERING = "_distilgan_registering_config"


def register_to_config(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate a model's ``__init__`` so that its arguments become ``self.config`` (diffusers' idea).

    Every constructor argument, defaults included, is recorded once, by the outermost decorated
    ``__init__`` (a subclass calling a decorated ``super().__init__`` records its own arguments); an
    ``__init__`` that checks and normalises an argument stores the clean value with
    ``self._config_override(name=value)``. ``from_pretrained`` calls the class with these entries.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        outermost = _REGISTERING not in self.__dict__
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = {name: value for name, value in list(bound.arguments.items())[1:]}
            self.__dict__[_REGISTERING] = {}  # overrides collected while the __init__ chain runs
        try:
            init(self, *args, **kwargs)
            if outermost:
                overrides = self.__dict__[_REGISTERING]
                self.config = {"architecture": type(self).__name__, **arguments, **overrides}
                self.metadata = {}
        finally:
            if outermost:
                del self.__dict__[_REGISTERING]

    return wrapper


class PretrainedMixin:
    """Adds ``config``, ``save_pretrained`` and ``from_pretrained`` to an ``nn.Module``.

    Subclasses decorate ``__init__`` with :func:`register_to_config`. ``architecture_aliases``: older
    architecture names a class still loads (their checkpoints keep working after a rename or merge).
    """

    config: dict[str, Any]
    metadata: dict[str, Any]
    architecture_aliases: tuple[str, ...] = ()

    @classmethod
    def _on_load(cls, folder: Path, config: dict[str, Any]) -> None:
        """Hook before a checkpoint is rebuilt (e.g. to note settings an older config.json lacks)."""

    def _config_override(self, **values: Any) -> None:
        """Record checked/normalised constructor values (inside a register_to_config ``__init__``)."""
        pending = self.__dict__.get(_REGISTERING)
        if pending is None:  # outside construction: the config itself
            self.config.update(values)
        else:
            pending.update(values)

    def save_pretrained(
        self, directory: str | os.PathLike, dtype: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write ``directory`` atomically as config.json + model.safetensors.

        ``dtype`` "fp16"/"bf16" halves the file for shipping (loading casts back to the model's
        float32); None keeps the weights as they are. ``metadata`` (JSON-able) is stored as is.
        """
        import torch
        from safetensors.torch import save_file

        from distilgan import __version__
        from distilgan.utils.atomic import atomic_dir, atomic_write_json

        if dtype is not None and dtype not in SAVE_DTYPES:
            raise UserError(f"unknown save dtype '{dtype}' (use fp32, fp16 or bf16)")
        target = getattr(torch, SAVE_DTYPES[dtype]) if dtype else None
        tensors = {}
        for key, value in self.state_dict().items():  # type: ignore[attr-defined]
            value = value.detach().to("cpu")
            if target is not None and value.is_floating_point():
                value = value.to(target)
            tensors[key] = value.contiguous()
        float_dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values() if t.is_floating_point()})
        config = dict(self.config)
        config["weights_dtype"] = ",".join(float_dtypes)
        config["distilgan_version"] = __version__
        if metadata is not None or self.metadata:
            config["metadata"] = dict(metadata if metadata is not None else self.metadata)
        with atomic_dir(directory) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "architecture": config["architecture"]})
            atomic_write_json(tmp / CONFIG_NAME, config, fsync=False)  # atomic_dir fsyncs the folder's files
            _apply_umask(tmp)
        return Path(directory)

    @classmethod
    def from_pretrained(cls: type[M], name_or_dir: str | os.PathLike, device: Any = "cpu") -> M:
        """Rebuild the model from a checkpoint folder or built-in name; weights from safetensors only."""
        folder = resolve_checkpoint(name_or_dir)
        config = read_config(folder)
        if config["architecture"] != cls.__name__ and config["architecture"] not in cls.architecture_aliases:
            raise UserError(
                f"{folder} holds a {config['architecture']}, not a {cls.__name__} "
                "(use distilgan.models.load_pretrained to load any architecture)"
            )
        kwargs = _constructor_kwargs(cls, config, folder)
        cls._on_load(folder, config)
        dev = parse_device(device)
        try:
            model = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise UserError(f"{folder / CONFIG_NAME} has invalid settings for {cls.__name__} ({err})") from None
        weights = read_weights(folder)
        _check_weights_match(model, weights, folder)
        model.load_state_dict(weights, strict=True)  # type: ignore[attr-defined]  # casts fp16 back
        model.metadata = dict(config.get("metadata") or {})
        model.checkpoint_dir = folder  # type: ignore[attr-defined]
        return model.to(dev).eval()  # type: ignore[attr-defined]
