"""What the server runs images through: a small backend interface and its torch implementation.

A backend turns (z float32 (N, z_dim), labels int64 (N,)) into uint8 NHWC images. The server draws
z itself (``distilgan.utils.noise``, from the request's seed), so every backend gives the same
images for the same request as ``StudentGenerator.generate`` and ``distilgan generate`` do. Each
backend also says what the model was trained on (``z_distribution``, ``classes``): the defaults of
every request.

``TranslatorBackend`` runs an image-to-image translator (``UNetTranslator``) for ``POST /translate``:
uint8 image + edit index -> uint8 image, through ``ImageTranslator`` as the Python API does.

``openvino`` (and ``onnxruntime``) serve a folder written by ``distilgan export`` through the
torch-free runtime (:mod:`distilgan.deploy.runtime`): what an edge box installs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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

    def __init__(self, kind: str, export_dir: str | os.PathLike) -> None:
        from distilgan.deploy.runtime import EdgeGenerator

        self.generator = EdgeGenerator(export_dir)
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
        info = self.generator.info
        return {
            "architecture": info.get("architecture", "exported generator"),
            "checkpoint": str(self.folder),
            "export": {key: value for key, value in info.items() if key not in ("class_names",)},
            "macs_per_image": info.get("macs_per_image"),
            "parameters": info.get("params"),  # the export JSON's key
            "figures": collect_figures(self.folder, {}),
            "device": "cpu",
        }


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


class TranslatorBackend:
    """An image-to-image translator checkpoint (``UNetTranslator``) run with PyTorch, served under
    ``model_name`` (several can be served side by side; requests choose one by name)."""

    name = "torch"

    def __init__(self, model_name: str, checkpoint: str | os.PathLike, device: str = "cpu") -> None:
        from distilgan.models.pretrained import resolve_checkpoint
        from distilgan.pipeline import ImageTranslator

        self.model_name = model_name
        self.folder = resolve_checkpoint(checkpoint)
        self.translator = ImageTranslator.from_pretrained(self.folder, device=device)
        if self.translator.channels not in (1, 3):  # uploads are decoded to grayscale or RGB only
            raise UserError(f"translator {checkpoint} takes {self.translator.channels}-channel images; "
                            "distilgan serve takes 1- or 3-channel translators (translate its inputs in Python instead)")
        self.resolution, self.channels = self.translator.resolution, self.translator.channels
        self.edits = self.translator.edits
        self._facts = checkpoint_facts(self.folder, self.translator.model)

    def edit_index(self, edit: int | str) -> int:
        return self.translator.edit_index(edit)

    def translate(self, image: np.ndarray, edit: int) -> np.ndarray:
        """uint8 (H, W, C) at the model's size -> uint8 (H, W, C): ``ImageTranslator.translate``
        of that one image."""
        return self.translator.translate(image[None], edit=edit, output="np")[0]

    def edit_records(self) -> list[dict[str, Any]]:
        """Every edit: index, name, and its source and target classes when the checkpoint knows them."""
        records = getattr(self.translator.model, "edits", None) or [{}] * len(self.edits)
        return [
            {"index": i, "name": name, **{key: records[i][key] for key in ("source", "target") if key in records[i]}}
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
            "device": str(self.translator.device),
        }


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def translator_spec(text: str) -> tuple[str, str]:
    """``--translator [NAME=]DIR`` -> (name, folder). Without a name: the folder's name, or its run
    folder's for ``RUN/generator`` (what ``distill-i2i`` writes), so runs/car2truck/generator is
    "car2truck"."""
    name, sep, folder = text.partition("=")
    if not sep or not name or Path(text).expanduser().exists():  # a path that itself contains "="
        path = Path(text).expanduser()
        name, folder = path.name, text
        if name == "generator" and path.resolve().parent.name:
            name = path.resolve().parent.name
    if not MODEL_NAME.match(name):
        raise UserError(f"--translator {text}: '{name}' cannot name a model (use NAME=DIR, NAME of letters, digits, '.', '_' or '-')")
    return name, folder


def load_translators(specs: list[str], device: str = "cpu") -> list[TranslatorBackend]:
    """Every ``--translator [NAME=]DIR`` loaded, names unique; one-line UserError otherwise."""
    named = [translator_spec(text) for text in specs]
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"two --translator models are named '{name}' (name them apart: --translator NAME=DIR)")
    return [TranslatorBackend(name, folder, device=device) for name, folder in named]


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


def load_backend(kind: str, checkpoint: str | os.PathLike, device: str = "cpu") -> Backend:
    """The backend ``kind`` with ``checkpoint`` loaded; one-line UserError for what cannot work."""
    if kind == "torch":
        return TorchBackend(checkpoint, device=device)
    if kind in ("openvino", "onnxruntime"):
        if device != "cpu":
            raise UserError(f"--backend {kind} runs on the CPU here (drop --device {device})")
        return ExportedBackend(kind, checkpoint)
    raise UserError(f"unknown backend '{kind}' (use one of {', '.join(BACKENDS)})")


__all__ = [
    "BACKENDS", "Backend", "ExportedBackend", "TorchBackend", "TranslatorBackend", "checkpoint_facts", "collect_figures",
    "load_backend", "load_translators", "translator_architecture", "translator_spec",
]
