"""INT8 post-training quantisation: a generator calibrated on its own inputs (no dataset needed), an
image translator on the source images of a pair set (translator_inputs.py).

A generator's input distribution is known exactly: the z distribution it was trained on (its
config.json's ``z_distribution``; N(0, I) unless the distillation set was truncated) and its
classes. Calibration draws z from it with ``distilgan.utils.noise`` (stream ``CALIBRATION_STREAM``
of the seed, so it never overlaps the evaluation z of seed 0) and balanced labels over the model's
classes, then runs:

* OpenVINO: ``nncf.quantize`` on the OpenVINO model (weights int8 symmetric per output channel,
  activations int8 per tensor; preset "performance" = symmetric activations, "mixed" = asymmetric);
* ONNX Runtime: ``quantize_static`` in QDQ format, per-channel int8 weights, through a
  ``CalibrationDataReader`` over the same feeds.

Both take the calibration feeds (dicts keyed by the graph's input names) and a record of where they
came from, so the same code quantises any exported kind. ``keep_first`` / ``keep_last`` leave the
first layer (the z projection; a translator's stem conv) and/or the last one (the to-RGB conv) in
floating point via NNCF's IgnoredScope or ORT's nodes_to_exclude.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.deploy import require
from distilgan.errors import UserError
from distilgan.utils.noise import ZDistribution, balanced_labels, rng
from distilgan.utils.extras import need

CALIBRATION_STREAM = 7001
PRESETS = ("performance", "mixed")
QUANTIZED_OV_OPS = ("MatMul", "Convolution")
QUANTIZED_ONNX_OPS = ("MatMul", "Gemm", "Conv")


def calibration_batches(z_dim: int, num_classes: int, size: int, seed: int = 0, batch: int = 1,
                        z_distribution: ZDistribution | None = None,
                        classes: Sequence[int] | None = None) -> list[dict[str, np.ndarray]]:
    """``size`` calibration samples as feeds of ``batch`` rows: {"z": float32, "labels": int64}.

    z from ``z_distribution`` (the model's; None = N(0, I)), labels balanced over ``classes`` (None = all):
    activation ranges are calibrated on the inputs the model will really see."""
    if size < 1:
        raise UserError(f"--calibration-size must be >= 1, got {size}")
    count = math.ceil(size / batch) * batch
    z = (z_distribution or ZDistribution()).sample(rng(seed, CALIBRATION_STREAM), count, z_dim)
    labels = balanced_labels(0, count, range(num_classes) if classes is None else classes)
    return [{"z": z[i : i + batch], "labels": labels[i : i + batch]} for i in range(0, count, batch)]


def generator_calibration(z_dim: int, num_classes: int, size: int, seed: int = 0, batch: int = 1,
                          z_distribution: ZDistribution | None = None,
                          classes: Sequence[int] | None = None) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """(feeds, record) of a generator's calibration: :func:`calibration_batches` and what they were."""
    feeds = calibration_batches(z_dim, num_classes, size, seed, batch, z_distribution, classes)
    distribution = z_distribution or ZDistribution()
    shown = "N(0, I)" if distribution.kind == "normal" else distribution.describe()
    return feeds, {"samples": len(feeds) * batch, "z": f"{shown}, noise.rng({seed}, {CALIBRATION_STREAM})",
                   "z_distribution": distribution.to_dict(),
                   "labels": "balanced" if classes is None else f"balanced over classes {list(classes)}"}


def _ends(names: list[str], keep_first: bool, keep_last: bool) -> list[str]:
    kept = []
    if keep_first and names:
        kept.append(names[0])
    if keep_last and names and names[-1] not in kept:
        kept.append(names[-1])
    return kept


def openvino_layer_names(model: Any) -> list[str]:
    """Friendly names of the quantisable layers (MatMul, Convolution) in execution order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZED_OV_OPS]


def quantize_openvino(
    model: Any,
    feeds: list[dict[str, np.ndarray]],
    calibration: dict[str, Any],
    keep_first: bool = False,
    keep_last: bool = False,
    preset: str = "performance",
) -> tuple[Any, dict[str, Any]]:
    """An ov.Model -> (INT8 ov.Model, what was done) with NNCF post-training quantisation."""
    nncf = require("nncf", "INT8 quantisation for OpenVINO")
    nncf.set_log_level(logging.WARNING)  # its INFO lines would bury the command's own output
    if preset not in PRESETS:
        raise UserError(f"unknown quantisation preset '{preset}' (use one of: {', '.join(PRESETS)})")
    kept = _ends(openvino_layer_names(model), keep_first, keep_last)
    options: dict[str, Any] = {}
    if kept:
        options["ignored_scope"] = nncf.IgnoredScope(names=kept)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(feeds),
        subset_size=len(feeds),
        preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED,
        **options,
    )
    info = {
        "method": f"nncf {nncf.__version__} post-training quantization (OpenVINO backend)",
        "preset": preset,
        "weights": "int8 symmetric per output channel",
        "activations": "int8 per tensor, " + ("symmetric" if preset == "performance" else "asymmetric"),
        "calibration": calibration,
        "kept_in_float": kept,
    }
    return quantized, info


class _FeedReader:
    """onnxruntime CalibrationDataReader over precomputed feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


def onnx_layer_names(path: str | Path) -> list[str]:
    onnx = need("onnx")

    graph = onnx.load(str(path)).graph
    return [node.name for node in graph.node if node.op_type in QUANTIZED_ONNX_OPS]


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    feeds: list[dict[str, np.ndarray]],
    calibration: dict[str, Any],
    keep_first: bool = False,
    keep_last: bool = False,
) -> dict[str, Any]:
    """FP32 ONNX file -> INT8 QDQ ONNX file with onnxruntime static quantisation."""
    need("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = type("Reader", (_FeedReader, CalibrationDataReader), {})(feeds)
    kept = _ends(onnx_layer_names(src), keep_first, keep_last)
    quantize_static(
        str(src), str(dst), reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        nodes_to_exclude=kept,
        extra_options={"ActivationSymmetric": True},
    )
    import onnxruntime

    return {
        "method": f"onnxruntime {onnxruntime.__version__} quantize_static, QDQ",
        "weights": "int8 symmetric per output channel",
        "activations": "int8 per tensor, symmetric, min-max calibration",
        "calibration": calibration,
        "kept_in_float": kept,
    }
