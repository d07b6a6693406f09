"""Run an exported student with numpy plus openvino or onnxruntime: no PyTorch.

    from distilgan.deploy.runtime import EdgeGenerator, EdgeTranslator
    g = EdgeGenerator("exports/student-int8")           # folder written by `distilgan export`
    images = g.generate(["cat", "dog", 3], seed=0)     # uint8 (3, H, W, C)
    t = EdgeTranslator("exports/i2i-int8")              # an exported image translator
    trucks = t.translate_uint8(cars, "automobile:truck")  # uint8 NHWC in, uint8 NHWC out

z is drawn exactly as ``StudentGenerator`` draws it (``distilgan.utils.noise``, whole label list at
once), so the same labels and seed give the same images as the PyTorch student up to the exported
model's numerical error. Labels are names from ``distilgan-export.json`` or indices, among the
classes the model was trained on; z follows its trained distribution unless ``truncation`` /
``truncation_kind`` override it (exports made before these were recorded: N(0, I), all classes).
A translator's edits are named as the checkpoint names them (``utils/edits.py``, shared code).

A path is an export folder, its ``distilgan-export.json``, or the model file itself (``model.onnx`` /
``model.xml``; the JSON beside it is read, and a lone ``.onnx`` written by ``distilgan export`` carries
the same facts in its metadata). Nothing here (nor in the modules it imports) imports torch; a test
runs it with torch imports blocked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distilgan.deploy import EXPORT_JSON, GENERATOR, ONNX_METADATA_KEY, TRANSLATOR, require
from distilgan.errors import UserError
from distilgan.utils.edits import EditLookup
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc, nhwc_to_nchw, uint8_to_float
from distilgan.utils.labels import label_indices
from distilgan.utils.latent import as_distribution, choose_distribution
from distilgan.utils.noise import rng

BACKENDS = ("openvino", "onnxruntime")
MODEL_SUFFIXES = {".onnx": "onnx", ".xml": "openvino"}
REQUIRED = {GENERATOR: ("z_dim", "num_classes", "resolution", "channels"),
            TRANSLATOR: ("num_edits", "resolution", "channels")}
INPUTS = {GENERATOR: ("z", "labels"), TRANSLATOR: ("images", "edits")}


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an export (folder, its JSON, or a .onnx/.xml file) rather than a checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        return (path / EXPORT_JSON).is_file()
    return path.is_file() and (path.name == EXPORT_JSON or path.suffix.lower() in MODEL_SUFFIXES)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({type(err).__name__}); export the model again") from None


def _onnx_facts(path: Path) -> dict[str, Any]:
    """The facts `distilgan export` writes into an ONNX file's metadata (a lone model.onnx)."""
    from distilgan.utils.extras import need

    onnx = need("onnx")
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as err:  # noqa: BLE001 - protobuf raises its own types on a corrupt file
        raise UserError(f"cannot read {path} as ONNX ({type(err).__name__}); give a model written by distilgan export") from None
    if ONNX_METADATA_KEY not in props:
        raise UserError(f"{path} has no distilgan metadata and no {EXPORT_JSON} beside it (give the folder written by distilgan export)")
    try:
        facts = json.loads(props[ONNX_METADATA_KEY])
    except json.JSONDecodeError:
        raise UserError(f"{path} has unreadable distilgan metadata (export the model again)") from None
    return {**facts, "format": "onnx"}


def read_export_info(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(export folder, parsed distilgan-export.json) from the folder, the json file or the model file."""
    given = Path(path).expanduser()
    folder, model_file = given, None
    if given.is_file() and given.name == EXPORT_JSON:
        folder = given.parent
    elif given.is_file() and given.suffix.lower() in MODEL_SUFFIXES:
        folder, model_file = given.parent, given.name
    elif given.is_file():
        raise UserError(f"{path} is not an export (give a folder written by `distilgan export`, or its .onnx / .xml file)")
    info_path = folder / EXPORT_JSON
    if not folder.is_dir():
        raise UserError(f"export folder not found: {path} (give a folder written by `distilgan export`)")
    if info_path.is_file():
        info = _load_json(info_path)
    elif model_file is not None and MODEL_SUFFIXES[given.suffix.lower()] == "onnx":
        info, info_path = _onnx_facts(given), given
    elif model_file is not None:
        raise UserError(f"{given} has no {EXPORT_JSON} beside it (give the folder written by `distilgan export`)")
    else:
        raise UserError(f"{folder} has no {EXPORT_JSON} (give a folder written by `distilgan export`)")
    if model_file is not None:
        fmt = MODEL_SUFFIXES[given.suffix.lower()]
        if info.get("format", fmt) != fmt:
            raise UserError(f"{given} is a {fmt} file but {info_path} describes a {info['format']} export (give the export folder)")
        info = {**info, "format": fmt, "model_file": model_file}
    kind = info.get("kind", GENERATOR)  # exports written before translators existed are generators
    if kind not in REQUIRED:
        raise UserError(f"{info_path} names an unknown model kind '{kind}' (export the model again)")
    for key in ("format", "model_file", *REQUIRED[kind]):
        if key not in info:
            raise UserError(f"{info_path} has no '{key}' entry (export the model again)")
    return folder, {**info, "kind": kind}


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__


class _ExportedModel:
    """The shared part: read the export, open a session, run feeds in (padded) chunks.

    ``batch``: compile a dynamic-batch OpenVINO model for this fixed batch size (faster on CPU);
    other batch sizes still work (they are run in chunks, the last one padded).
    ``inference_precision`` (OpenVINO): "f32" by default, because OpenVINO's CPU plugin otherwise
    computes the float parts in bf16 on CPUs that have it (max error ~5e-2 instead of ~2e-4 here);
    pass "bf16" to trade that accuracy for speed.
    """

    kind = GENERATOR

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, batch: int | None = None,
        inference_precision: str = "f32",
    ) -> None:
        self.inference_precision = inference_precision
        self.folder, self.info = read_export_info(path)
        if self.info["kind"] != self.kind:
            raise UserError(f"{path} holds an exported {self.info['kind']}, not a {self.kind} (give an export of a {self.kind})")
        self.format = self.info["format"]
        self.resolution = int(self.info["resolution"])
        self.channels = int(self.info["channels"])
        model_path = self.folder / self.info["model_file"]
        if not model_path.is_file():
            raise UserError(f"{model_path} is missing (export the model again)")
        self.fixed_batch: int | None = self.info.get("batch") if isinstance(self.info.get("batch"), int) else None
        if self.format == "openvino":
            self.backend = "openvino"
            self._run = self._openvino(model_path, threads, batch)
        elif self.format == "onnx":
            self.backend = "onnxruntime"
            self._run = self._onnxruntime(model_path, threads)
        else:
            raise UserError(f"{self.folder / EXPORT_JSON} names unknown format '{self.format}' (use onnx or openvino)")
        unknown = [name for name in self.graph_inputs if name not in INPUTS[self.kind]]
        if unknown:  # feeding by name would silently leave them empty
            raise UserError(f"{model_path} has inputs {', '.join(unknown)} that a {self.kind} export does not have "
                            f"(expected {', '.join(INPUTS[self.kind])}; export the model again)")

    def _shape(self, name: str, batch: int) -> list[int]:
        if name == "z":
            return [batch, int(self.info["z_dim"])]
        if name == "images":
            return [batch, self.channels, self.resolution, self.resolution]
        return [batch]  # labels, edits

    def _openvino(self, model_path: Path, threads: int | None, batch: int | None) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        ov = require("openvino", "running an OpenVINO export")
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
        except Exception as err:  # noqa: BLE001 - openvino raises RuntimeError subclasses
            raise UserError(f"openvino cannot read {model_path} ({_first_line(err)})") from None
        # a one-edit translator's graph has no edits input (the exporter drops unused inputs); a port
        # can carry several tensor names (OpenVINO merges a no-op Cast's output into "edits")
        known = INPUTS[self.kind]
        self.graph_inputs = [next((n for n in known if n in port.get_names()), port.get_any_name()) for port in model.inputs]
        if batch and self.fixed_batch is None:
            model.reshape({name: self._shape(name, batch) for name in self.graph_inputs})
            self.fixed_batch = batch
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            request.infer(feeds)
            return np.array(request.get_output_tensor(0).data, copy=True)

        return run

    def _onnxruntime(self, model_path: Path, threads: int | None) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        ort = require("onnxruntime", "running an ONNX export")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise UserError(f"onnxruntime cannot load {model_path} ({_first_line(err)})") from None
        self.graph_inputs = [node.name for node in session.get_inputs()]
        output = session.get_outputs()[0].name

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return session.run([output], feeds)[0]

        return run

    def _run_chunks(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Feeds of N rows (only the graph's inputs are passed) -> float32 NCHW output, in chunks of
        the fixed batch (the last one padded with copies of its last row)."""
        feeds = {name: array for name, array in feeds.items() if name in self.graph_inputs}
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch or max(n, 1)
        parts = []
        for start in range(0, n, step):
            part = {name: array[start : start + step] for name, array in feeds.items()}
            rows = len(next(iter(part.values())))
            if rows < step:
                part = {name: np.concatenate([a, np.repeat(a[-1:], step - rows, axis=0)]) for name, a in part.items()}
            parts.append(np.asarray(self._run(part), dtype=np.float32)[:rows])
        if not parts:
            return np.zeros((0, self.channels, self.resolution, self.resolution), np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


class EdgeGenerator(_ExportedModel):
    """An exported generator behind one ``run(z, labels)`` call on the chosen backend."""

    kind = GENERATOR

    def __init__(self, path: str | os.PathLike, threads: int | None = None, batch: int | None = None,
                 inference_precision: str = "f32") -> None:
        super().__init__(path, threads, batch, inference_precision)
        self.z_dim = int(self.info["z_dim"])
        self.num_classes = int(self.info["num_classes"])
        names = self.info.get("class_names")
        self.class_names = [str(n) for n in names] if names else [str(i) for i in range(self.num_classes)]
        self.z_distribution = as_distribution(self.info.get("z_distribution"))
        self.classes = [int(c) for c in self.info.get("classes") or range(self.num_classes)]

    def run(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """float32 z (N, z_dim), int64 labels (N,) -> float32 NCHW images in about [-1, 1]."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if z.ndim != 2 or z.shape[1] != self.z_dim or labels.shape != (len(z),):
            raise UserError(f"z {z.shape} / labels {labels.shape} do not fit this model (expected (N, {self.z_dim}) and (N,))")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"labels must lie in 0..{self.num_classes - 1}")
        return self._run_chunks({"z": z, "labels": labels})

    def label_indices(self, labels: Sequence[int | str] | int | str) -> np.ndarray:
        """Class names or indices -> int64 indices, checked against the exported (trained) classes."""
        return label_indices(labels, self.class_names, allowed=self.classes)

    def generate(
        self, labels: Sequence[int | str] | int | str, seed: int = 0, truncation: float | None = None,
        truncation_kind: str | None = None,
    ) -> np.ndarray:
        """One image per label -> uint8 NHWC, z drawn from ``seed`` as the PyTorch student does."""
        indices = self.label_indices(labels)
        distribution = choose_distribution(self.z_distribution, truncation, truncation_kind)
        z = distribution.sample(rng(seed), len(indices), self.z_dim)
        return nchw_to_nhwc(float_to_uint8(self.run(z, indices)))

    def __repr__(self) -> str:
        return (f"EdgeGenerator({self.folder}, {self.backend}, {self.info.get('precision')}, "
                f"{self.resolution}x{self.resolution}x{self.channels}, {self.num_classes} classes)")


class EdgeTranslator(EditLookup, _ExportedModel):
    """An exported image translator: ``run(images, edits)`` (float NCHW in [-1, 1]) and
    ``translate_uint8(batch, edit)`` (uint8 NHWC, what ``distilgan translate`` runs)."""

    kind = TRANSLATOR

    def __init__(self, path: str | os.PathLike, threads: int | None = None, batch: int | None = None,
                 inference_precision: str = "f32") -> None:
        super().__init__(path, threads, batch, inference_precision)
        self.num_edits = int(self.info["num_edits"])
        names = self.info.get("edit_names")
        self.edit_names = [str(n) for n in names] if names else [str(i) for i in range(self.num_edits)]
        self.edits = self.info.get("edits")
        names = self.info.get("class_names")
        self.class_names = [str(n) for n in names] if names else None

    def run(self, images: np.ndarray, edits: np.ndarray | None = None) -> np.ndarray:
        """float32 images (N, C, H, W) in [-1, 1], int64 edits (N,) -> float32 NCHW in about [-1, 1]."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        expected = (self.channels, self.resolution, self.resolution)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise UserError(f"images {images.shape} do not fit this translator (expected (N, {', '.join(map(str, expected))}))")
        edits = np.zeros(len(images), np.int64) if edits is None else np.ascontiguousarray(edits, dtype=np.int64)
        if edits.shape != (len(images),):
            raise UserError(f"edits {edits.shape} do not fit {len(images)} images (give one edit index per image)")
        if edits.size and (edits.min() < 0 or edits.max() >= self.num_edits):
            raise UserError(f"edits must lie in 0..{self.num_edits - 1}")
        return self._run_chunks({"images": images, "edits": edits})

    def translate_uint8(self, batch: np.ndarray, edit: int | str | None = None) -> np.ndarray:
        """uint8 NHWC -> uint8 NHWC with one edit (a name or an index; None only with one edit)."""
        if edit is None and self.num_edits > 1:
            raise UserError(f"this translator does {self.num_edits} edits; choose one ({', '.join(self.edit_names)})")
        index = 0 if edit is None else self.edit_index(edit)
        if batch.dtype != np.uint8 or batch.ndim != 4:
            raise UserError(f"an array of {batch.dtype} {batch.shape} given; give uint8 (N, H, W, C) (NHWC)")
        out = self.run(nhwc_to_nchw(uint8_to_float(batch)), np.full(len(batch), index, np.int64))
        return nchw_to_nhwc(float_to_uint8(out))

    def __repr__(self) -> str:
        return (f"EdgeTranslator({self.folder}, {self.backend}, {self.info.get('precision')}, "
                f"{self.resolution}x{self.resolution}x{self.channels}, edits {', '.join(self.edit_names)})")


def open_export(path: str | os.PathLike, **options: Any) -> EdgeGenerator | EdgeTranslator:
    """The runtime that fits the export at ``path`` (generator or translator)."""
    _, info = read_export_info(path)
    return (EdgeTranslator if info["kind"] == TRANSLATOR else EdgeGenerator)(path, **options)
