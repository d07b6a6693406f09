"""What the server runs images through: a small backend interface and its torch implementation.

A backend turns (z float32 (N, z_dim), labels int64 (N,)) into uint8 NHWC images. The server draws
z itself (``distilgan.utils.noise``, from the request's seed), so every backend gives the same
images for the same request as ``StudentGenerator.generate`` and ``distilgan generate`` do. Each
backend also says what the model was trained on (``z_distribution``, ``classes``): the defaults of
every request.

A ``ServedTranslator`` runs an image-to-image translator for ``POST /translate``: uint8 image + edit
index -> uint8 image. ``TranslatorBackend`` runs a ``UNetTranslator`` checkpoint through
``ImageTranslator`` as the Python API does; ``ExportedTranslatorBackend`` runs its export through
``EdgeTranslator`` (no PyTorch), as ``distilgan translate`` does. ``--translator`` tells them apart by
the path (``deploy.runtime.is_export``): the runtime follows the export's format.

``openvino`` (and ``onnxruntime``) serve a folder written by ``distilgan export`` through the
torch-free runtime (:mod:`distilgan.deploy.runtime`): what an edge box installs.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distilgan.deploy import EXPORT_JSON, ONNX_FILE, OPENVINO_FILE, TRANSLATOR
from distilgan.errors import UserError
from distilgan.utils.noise import ZDistribution

BACKENDS = ("torch", "openvino", "onnxruntime")
# Metadata keys whose values are evaluation figures worth showing next to the model.
FIGURE_KEYS = ("metrics", "eval", "evaluation", "protocol", "fid", "kid", "is", "scores")


class Backend(Protocol):
    """The interface every serving backend implements."""

    name: str
    z_dim: int
    num_classes: int
    resolution: int
    channels: int
    class_names: list[str]
    z_distribution: ZDistribution  # what requests sample by default
    classes: list[int]  # the trained classes, in label order

    def generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """z float32 (N, z_dim), labels int64 (N,) -> uint8 (N, H, W, C)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for ``GET /model``."""
        ...


class TorchBackend:
    """A distilgan generator checkpoint run with PyTorch (eval mode, inference mode)."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu", batch_size: int = 256) -> None:
        from distilgan.models.pretrained import resolve_checkpoint
        from distilgan.pipeline import StudentGenerator

        self.folder = resolve_checkpoint(checkpoint)
        self.generator = StudentGenerator.from_pretrained(self.folder, device=device)
        self.batch_size = batch_size
        self.z_dim = self.generator.z_dim
        self.num_classes = self.generator.num_classes
        self.resolution = self.generator.resolution
        self.channels = self.generator.channels
        self.class_names = self.generator.class_names
        self.z_distribution, self.classes = self.generator.z_distribution, self.generator.classes
        self._facts = checkpoint_facts(self.folder, self.generator.model)

    def generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        import torch

        from distilgan.pipeline import to_uint8_nhwc

        device = self.generator.device
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(labels), self.batch_size):
                z_batch = torch.from_numpy(np.ascontiguousarray(z[start : start + self.batch_size])).to(device)
                label_batch = torch.from_numpy(np.ascontiguousarray(labels[start : start + self.batch_size])).to(device)
                chunks.append(to_uint8_nhwc(self.generator.model(z_batch, label_batch).float()))
        return np.concatenate(chunks)

    def describe(self) -> dict[str, Any]:
        return {**self._facts, "device": str(self.generator.device)}


class ExportedBackend:
    """A model exported by ``distilgan export`` (OpenVINO IR or ONNX), run without PyTorch."""

    def __init__(self, kind: str, export_dir: str | os.PathLike, threads: int | None = None) -> None:
        from distilgan.deploy.runtime import EdgeGenerator

        self.generator = EdgeGenerator(export_dir, threads=threads)
        if self.generator.backend != kind:
            raise UserError(
                f"{export_dir} holds a {self.generator.format} export, which runs with --backend {self.generator.backend}, "
                f"not {kind} (export again with --format {kind if kind == 'openvino' else 'onnx'})"
            )
        self.name = kind
        self.folder = self.generator.folder
        self.z_dim, self.num_classes = self.generator.z_dim, self.generator.num_classes
        self.resolution, self.channels = self.generator.resolution, self.generator.channels
        self.class_names = self.generator.class_names
        self.z_distribution, self.classes = self.generator.z_distribution, self.generator.classes

    def generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        from distilgan.utils.images import float_to_uint8, nchw_to_nhwc

        return nchw_to_nhwc(float_to_uint8(self.generator.run(z, labels)))

    def describe(self) -> dict[str, Any]:
        return export_facts(self.folder, self.generator.info, "exported generator")


def checkpoint_facts(folder: Path, model: Any) -> dict[str, Any]:
    """Size and cost of a torch checkpoint, counted once at start-up (one forward pass at batch 1),
    with its config, metadata and saved evaluation figures: what ``GET /model`` and ``GET /translators``
    report."""
    from distilgan.models.macs import count_macs
    from distilgan.models.pretrained import read_config

    counted = count_macs(model)
    config = read_config(folder)
    metadata = config.get("metadata") or {}
    return {
        "architecture": config.get("architecture"),
        "checkpoint": str(folder),
        "parameters": counted.params,
        "macs_per_image": counted.macs_per_image,
        "macs_excluded": counted.excluded,
        "config": config,
        "metadata": metadata,
        "figures": collect_figures(folder, metadata),
    }


def export_facts(folder: Path, info: dict[str, Any], architecture: str) -> dict[str, Any]:
    """What ``GET /model`` and ``GET /translators`` report of an export: its distilgan-export.json as
    ``export`` (less the name lists, which have their own fields), size, cost, precision and the figures
    saved beside it. ``architecture``: what to call a model whose export does not name it (a lone .onnx)."""
    return json_safe({
        "architecture": info.get("architecture", architecture),
        "checkpoint": str(folder),
        "precision": info.get("precision"),
        "export": {key: value for key, value in info.items() if key not in ("class_names", "edit_names", "edits")},
        "macs_per_image": info.get("macs_per_image"),
        "parameters": info.get("params"),  # the export JSON's key
        "figures": collect_figures(folder, {}),
        "device": "cpu",
    })


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as the string "inf", "-inf" or "nan": the export JSON records
    a parity PSNR of Infinity for identical outputs, which strict JSON (and so the response) cannot carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def collect_figures(folder: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Evaluation figures saved with a checkpoint: metadata entries named like metrics, and
    ``metrics*.json`` / ``eval*.json`` files in its folder (each with the protocol it carries)."""
    figures: dict[str, Any] = {key: value for key, value in metadata.items() if key.lower() in FIGURE_KEYS}
    for path in sorted(folder.glob("*.json")):
        if path.name != "config.json" and path.name.lower().startswith(("metrics", "eval")):
            try:
                figures[path.name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                figures[path.name] = {"unreadable": f"{type(err).__name__}: {err}"}
    return figures


class ServedTranslator:
    """An image-to-image translator served under ``model_name`` (several can be served side by side;
    requests choose one by name): a torch checkpoint (``TranslatorBackend``) or an export
    (``ExportedTranslatorBackend``), both behind the one uint8 batch function ``translate_uint8(batch,
    edit)`` and the shared edit lookup (``utils/edits.py``), so they answer the same requests alike."""

    name: str  # the backend: torch, onnxruntime or openvino

    def __init__(self, model_name: str, source: str | os.PathLike, runtime: Any, edit_names: list[str],
                 records: list[dict[str, Any]] | None, facts: dict[str, Any]) -> None:
        if runtime.channels not in (1, 3):  # uploads are decoded to grayscale or RGB only
            raise UserError(f"translator {source} takes {runtime.channels}-channel images; "
                            "distilgan serve takes 1- or 3-channel translators (translate its inputs in Python instead)")
        self.model_name, self.runtime = model_name, runtime
        self.resolution, self.channels = runtime.resolution, runtime.channels
        self.edits = list(edit_names)
        self._records = records or [{}] * len(self.edits)
        self._facts = facts

    def edit_index(self, edit: int | str) -> int:
        return self.runtime.edit_index(edit)

    def translate(self, image: np.ndarray, edit: int) -> np.ndarray:
        """uint8 (H, W, C) at the model's size -> uint8 (H, W, C): the runtime's ``translate_uint8``
        of that one image (for a checkpoint, ``ImageTranslator.translate``)."""
        return self.runtime.translate_uint8(image[None], edit)[0]

    def edit_records(self) -> list[dict[str, Any]]:
        """Every edit: index, name, and its source and target classes when the model records them."""
        return [
            {"index": i, "name": name, **{key: self._records[i][key] for key in ("source", "target") if key in self._records[i]}}
            for i, name in enumerate(self.edits)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "backend": self.name,
            "resolution": self.resolution,
            "channels": self.channels,
            "num_edits": len(self.edits),
            "edits": self.edit_records(),
            **self._facts,
        }


class TranslatorBackend(ServedTranslator):
    """A translator checkpoint (``UNetTranslator``) run with PyTorch through ``ImageTranslator``, as the
    Python API does."""

    name = "torch"

    def __init__(self, model_name: str, checkpoint: str | os.PathLike, device: str = "cpu") -> None:
        from distilgan.models.pretrained import resolve_checkpoint
        from distilgan.pipeline import ImageTranslator

        self.folder = resolve_checkpoint(checkpoint)
        translator = ImageTranslator.from_pretrained(self.folder, device=device)
        facts = {**checkpoint_facts(self.folder, translator.model), "device": str(translator.device)}
        super().__init__(model_name, checkpoint, translator, translator.edits, getattr(translator.model, "edits", None), facts)


class ExportedTranslatorBackend(ServedTranslator):
    """A translator exported by ``distilgan export`` (its folder, ``.onnx``, or ``.xml`` with its JSON),
    run by ``EdgeTranslator`` with onnxruntime or OpenVINO: no PyTorch for the model."""

    def __init__(self, model_name: str, path: str | os.PathLike, threads: int | None = None) -> None:
        from distilgan.deploy.runtime import EdgeTranslator

        translator = EdgeTranslator(path, threads=threads)
        self.name, self.folder = translator.backend, translator.folder
        facts = export_facts(translator.folder, translator.info, "exported translator")
        super().__init__(model_name, path, translator, translator.edit_names, translator.edits, facts)


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def translator_spec(text: str) -> tuple[str, str]:
    """``--translator [NAME=]PATH`` -> (name, path). Without a name: the folder's name, or its run
    folder's for ``RUN/generator`` (what ``distill-i2i`` writes), so runs/car2truck/generator is
    "car2truck"; for a file, its stem, or its folder's name for the files ``distilgan export`` writes
    (exports/i2i-int8/model.xml is "i2i-int8")."""
    name, sep, folder = text.partition("=")
    if not sep or not name or Path(text).expanduser().exists():  # a path that itself contains "="
        path = Path(text).expanduser()
        name, folder = path.name, text
        if path.is_file():
            name = path.resolve().parent.name if path.name in (EXPORT_JSON, ONNX_FILE, OPENVINO_FILE) else path.stem
        elif name == "generator" and path.resolve().parent.name:
            name = path.resolve().parent.name
    if not MODEL_NAME.match(name):
        raise UserError(f"--translator {text}: '{name}' cannot name a model (use NAME=DIR, NAME of letters, digits, '.', '_' or '-')")
    return name, folder


def exported_kind(path: str | os.PathLike) -> tuple[str, str] | None:
    """(kind, runtime) of the export at ``path`` (folder, its JSON, .onnx or .xml), e.g. ("translator",
    "onnxruntime"); None when ``path`` is not an export. A damaged export is a one-line UserError."""
    from distilgan.deploy.runtime import is_export, read_export_info

    if not is_export(path):
        return None
    _, info = read_export_info(path)
    return info["kind"], "openvino" if info["format"] == "openvino" else "onnxruntime"


def load_translator(name: str, path: str, device: str = "cpu", threads: int | None = None) -> ServedTranslator:
    """``--translator NAME=PATH``: a torch checkpoint, or an export run without PyTorch (``threads``: its
    runtime's threads, None for the runtime's default)."""
    exported = exported_kind(path)
    if exported is None:
        return TranslatorBackend(name, path, device=device)
    kind, runtime = exported
    if kind != TRANSLATOR:
        raise UserError(f"--translator {path} holds an exported {kind}, not an image translator "
                        f"(serve it with --model {path} --backend {runtime})")
    if device != "cpu":
        raise UserError(f"--translator {path} is an export, which runs on the CPU here (drop --device {device})")
    return ExportedTranslatorBackend(name, path, threads=threads)


def load_translators(specs: list[str], device: str = "cpu", threads: int | None = None) -> list[ServedTranslator]:
    """Every ``--translator [NAME=]PATH`` loaded (checkpoints and exports), names unique; one-line
    UserError otherwise."""
    named = [translator_spec(text) for text in specs]
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"two --translator models are named '{name}' (name them apart: --translator NAME=DIR)")
    return [load_translator(name, path, device=device, threads=threads) for name, path in named]


def translator_architecture(checkpoint: str | os.PathLike) -> str | None:
    """The architecture's name when ``checkpoint`` holds an image translator, else None (also when it
    cannot be read: loading it says why)."""
    from distilgan.models import ARCHITECTURES, UNetTranslator
    from distilgan.models.pretrained import read_config, resolve_checkpoint

    try:
        architecture = read_config(resolve_checkpoint(checkpoint))["architecture"]
    except UserError:
        return None
    cls = ARCHITECTURES.get(architecture)
    return architecture if cls is not None and issubclass(cls, UNetTranslator) else None


def load_backend(kind: str, checkpoint: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Backend:
    """The backend ``kind`` with ``checkpoint`` loaded; one-line UserError for what cannot work.
    ``threads``: an export's runtime threads (None: the runtime's default)."""
    if kind == "torch":
        return TorchBackend(checkpoint, device=device)
    if kind in ("openvino", "onnxruntime"):
        if device != "cpu":
            raise UserError(f"--backend {kind} runs on the CPU here (drop --device {device})")
        return ExportedBackend(kind, checkpoint, threads=threads)
    raise UserError(f"unknown backend '{kind}' (use one of {', '.join(BACKENDS)})")


__all__ = [
    "BACKENDS", "Backend", "ExportedBackend", "ExportedTranslatorBackend", "ServedTranslator", "TorchBackend",
    "TranslatorBackend", "checkpoint_facts", "collect_figures", "export_facts", "exported_kind", "json_safe", "load_backend",
    "load_translator", "load_translators", "translator_architecture", "translator_spec",
]
