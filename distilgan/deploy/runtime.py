"""Generate images from an exported student with numpy plus openvino or onnxruntime: no PyTorch.

    from distilgan.deploy.runtime import EdgeGenerator
    g = EdgeGenerator("exports/student-int8")           # folder written by `distilgan export`
    images = g.generate(["cat", "dog", 3], seed=0)     # uint8 (3, H, W, C)

z is drawn exactly as ``StudentGenerator`` draws it (``distilgan.utils.noise``, whole label list at
once), so the same labels and seed give the same images as the PyTorch student up to the exported
model's numerical error. Labels are names from ``distilgan-export.json`` or indices, among the
classes the model was trained on; z follows its trained distribution unless ``truncation`` /
``truncation_kind`` override it (exports made before these were recorded: N(0, I), all classes).

Nothing here (nor in the modules it imports) imports torch; a test runs it with torch imports blocked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.deploy import EXPORT_JSON, require
from distilgan.errors import UserError
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
from distilgan.utils.labels import label_indices
from distilgan.utils.latent import as_distribution, choose_distribution
from distilgan.utils.noise import rng

BACKENDS = ("openvino", "onnxruntime")


def read_export_info(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(export folder, parsed distilgan-export.json) from the folder or the json file itself."""
    folder = Path(path).expanduser()
    if folder.is_file() and folder.name == EXPORT_JSON:
        folder = folder.parent
    info_path = folder / EXPORT_JSON
    if not folder.is_dir():
        raise UserError(f"export folder not found: {path} (give a folder written by `distilgan export`)")
    if not info_path.is_file():
        raise UserError(f"{folder} has no {EXPORT_JSON} (give a folder written by `distilgan export`)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{info_path} is not valid JSON ({type(err).__name__}); export the model again") from None
    for key in ("format", "model_file", "z_dim", "num_classes", "resolution", "channels"):
        if key not in info:
            raise UserError(f"{info_path} has no '{key}' entry (export the model again)")
    return folder, info


class EdgeGenerator:
    """An exported generator behind one ``run(z, labels)`` call on the chosen backend.

    ``batch``: compile a dynamic-batch OpenVINO model for this fixed batch size (faster on CPU);
    other batch sizes still work (they are run in chunks, the last one padded).
    ``inference_precision`` (OpenVINO): "f32" by default, because OpenVINO's CPU plugin otherwise
    computes the float parts in bf16 on CPUs that have it (max error ~5e-2 instead of ~2e-4 here);
    pass "bf16" to trade that accuracy for speed.
    """

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, batch: int | None = None,
        inference_precision: str = "f32",
    ) -> None:
        self.inference_precision = inference_precision
        self.folder, self.info = read_export_info(path)
        self.format = self.info["format"]
        self.z_dim = int(self.info["z_dim"])
        self.num_classes = int(self.info["num_classes"])
        self.resolution = int(self.info["resolution"])
        self.channels = int(self.info["channels"])
        names = self.info.get("class_names")
        self.class_names = [str(n) for n in names] if names else [str(i) for i in range(self.num_classes)]
        self.z_distribution = as_distribution(self.info.get("z_distribution"))
        self.classes = [int(c) for c in self.info.get("classes") or range(self.num_classes)]
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

    def _openvino(self, model_path: Path, threads: int | None, batch: int | None) -> Any:
        ov = require("openvino", "running an OpenVINO export")
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
        except Exception as err:  # noqa: BLE001 - openvino raises RuntimeError subclasses
            raise UserError(f"openvino cannot read {model_path} ({str(err).strip().splitlines()[0][:120]})") from None
        if batch and self.fixed_batch is None:
            model.reshape({"z": [batch, self.z_dim], "labels": [batch]})
            self.fixed_batch = batch
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def run(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
            request.infer({"z": z, "labels": labels})
            return np.array(request.get_output_tensor(0).data, copy=True)

        return run

    def _onnxruntime(self, model_path: Path, threads: int | None) -> Any:
        ort = require("onnxruntime", "running an ONNX export")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise UserError(f"onnxruntime cannot load {model_path} ({str(err).strip().splitlines()[0][:120]})") from None

        def run(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
            return session.run(["images"], {"z": z, "labels": labels})[0]

        return run

    def run(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """float32 z (N, z_dim), int64 labels (N,) -> float32 NCHW images in about [-1, 1]."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if z.ndim != 2 or z.shape[1] != self.z_dim or labels.shape != (len(z),):
            raise UserError(f"z {z.shape} / labels {labels.shape} do not fit this model (expected (N, {self.z_dim}) and (N,))")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"labels must lie in 0..{self.num_classes - 1}")
        step = self.fixed_batch or max(len(z), 1)
        parts = []
        for start in range(0, len(z), step):
            z_part, label_part = z[start : start + step], labels[start : start + step]
            n = len(z_part)
            if n < step:  # fixed-batch graph: pad with copies of the last row
                z_part = np.concatenate([z_part, np.repeat(z_part[-1:], step - n, axis=0)])
                label_part = np.concatenate([label_part, np.repeat(label_part[-1:], step - n)])
            parts.append(np.asarray(self._run(z_part, label_part), dtype=np.float32)[:n])
        if not parts:
            return np.zeros((0, self.channels, self.resolution, self.resolution), np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

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
