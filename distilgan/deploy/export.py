"""Export a student checkpoint to ONNX or OpenVINO IR at fp32, fp16 or int8, with a parity check.

The export folder holds the model (``model.onnx``, or ``model.xml`` + ``model.bin``) and
``distilgan-export.json``: the source checkpoint's fingerprint, format, precision, batch, class
names, z_dim, resolution, MACs, the z distribution and classes the model was trained on (the
edge runtime samples with them; INT8 calibration and parity draw from them), the quantisation
recipe, and parity figures against PyTorch (max/mean abs error on fixed z, and how many uint8
pixel values differ).

Graph contract: inputs ``z`` float32 (N, z_dim) and ``labels`` int64 (N,), output ``images``
float32 NCHW in [-1, 1]; N is dynamic unless ``batch`` fixes it. The ONNX file also carries
metadata (z_dim, num_classes, resolution, class_names) so ``onnx:`` teachers read it directly.

OpenVINO models are converted from the FP32 ONNX graph (``openvino.convert_model``); fp16 stores
compressed weights (``save_model(compress_to_fp16=True)``; the CPU plugin computes in fp32 unless
the CPU has native fp16), int8 is NNCF post-training quantisation (see quantize.py).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.deploy import (
    EXPORT_JSON,
    FORMATS,
    ONNX_FILE,
    OPENVINO_FILE,
    PRECISIONS,
    check_choice,
    require,
)
from distilgan.errors import UserError
from distilgan.utils.atomic import atomic_dir, atomic_write_json
from distilgan.utils.images import float_to_uint8
from distilgan.utils.latent import model_classes, model_z_distribution
from distilgan.utils.noise import balanced_labels, rng
from distilgan.utils.extras import need

PARITY_SAMPLES = 64
ONNX_OPSET = 17


def parse_batch(value: str | int | None) -> int | None:
    """"dynamic"/None -> None; "N" -> N >= 1."""
    if value is None or value == "dynamic":
        return None
    try:
        batch = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--batch must be 'dynamic' or a positive integer, got '{value}'") from None
    if batch < 1:
        raise UserError(f"--batch must be 'dynamic' or a positive integer, got '{value}'")
    return batch


def load_generator(checkpoint: str | os.PathLike) -> Any:
    """A generator checkpoint in eval mode on the CPU (one-line errors for anything else)."""
    from distilgan.models import load_pretrained

    model = load_pretrained(checkpoint, device="cpu")
    if not hasattr(model, "z_dim"):
        raise UserError(f"{checkpoint} holds a {type(model).__name__}, not a generator (export the generator/ folder)")
    return model.eval()


def generator_facts(model: Any) -> dict[str, Any]:
    from distilgan.models.macs import count_macs

    count = count_macs(model)
    names = getattr(model, "class_names", None)
    return {
        "architecture": type(model).__name__,
        "z_dim": int(model.z_dim),
        "num_classes": int(model.num_classes),
        "resolution": int(model.resolution),
        "channels": int(model.channels),
        "class_names": list(names) if names else [str(i) for i in range(model.num_classes)],
        "macs_per_image": count.macs_per_image,
        "params": count.params,
        # what it was trained on: the defaults of the runtime, the calibration and the parity z
        "z_distribution": model_z_distribution(model).to_dict(),
        "classes": model_classes(model),
        "teacher_fingerprint": getattr(model, "teacher_fingerprint", None),
    }


def _bake_parametrizations(model: Any) -> Any:
    """A copy with parametrizations (e.g. spectral norm in BigGAN generators) folded into plain
    weights: the exporter cannot trace spectral norm's power iteration (aten::vdot)."""
    import copy

    from torch.nn.utils import parametrize

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def export_onnx(model: Any, path: str | os.PathLike, batch: int | None = None, fp16: bool = False) -> Path:
    """Trace ``model`` to ONNX (TorchScript exporter): inputs z, labels; output images."""
    onnx = need("onnx")
    import torch

    class _Half(torch.nn.Module):
        # fp16 weights and compute inside, float32 at the graph's edges (same contract as fp32)
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return self.inner(z.half(), labels).float()

    module = _bake_parametrizations(model)
    module = _Half(module.half()).eval() if fp16 else module.eval()
    n = batch or 2
    z = torch.zeros(n, model.z_dim)
    labels = torch.zeros(n, dtype=torch.long)
    dynamic = None if batch else {"z": {0: "batch"}, "labels": {0: "batch"}, "images": {0: "batch"}}
    path = Path(path)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (z, labels), str(path), input_names=["z", "labels"], output_names=["images"],
                dynamic_axes=dynamic, opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False,
            )
    except torch.onnx.errors.OnnxExporterError as err:  # e.g. BigGAN generators (not supported yet)
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot export {type(model).__name__} to ONNX ({first}); export supports DiStyleGAN students") from None
    graph = onnx.load(str(path))
    names = getattr(model, "class_names", None) or [str(i) for i in range(model.num_classes)]
    meta = {"z_dim": model.z_dim, "num_classes": model.num_classes, "resolution": model.resolution,
            "class_names": json.dumps(list(names)), "producer": "distilgan export"}
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(graph, str(path))
    return path


def to_openvino(onnx_path: str | os.PathLike) -> Any:
    ov = require("openvino", "--format openvino")
    return ov.convert_model(str(onnx_path))


def parity(model: Any, export_dir: str | os.PathLike, n: int = PARITY_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Exported model against PyTorch on fixed z (seed, the model's z distribution, balanced labels
    over its classes)."""
    import torch

    from distilgan.deploy.runtime import EdgeGenerator

    distribution = model_z_distribution(model)
    z = distribution.sample(rng(seed), n, model.z_dim)
    labels = balanced_labels(0, n, model_classes(model))
    with torch.inference_mode():
        reference = model(torch.from_numpy(z), torch.from_numpy(labels)).float().numpy()
    exported = EdgeGenerator(export_dir).run(z, labels)
    diff = np.abs(exported - reference)
    u_diff = np.abs(float_to_uint8(exported).astype(np.int16) - float_to_uint8(reference).astype(np.int16))
    return {
        "samples": n,
        "seed": seed,
        "z_distribution": distribution.to_dict(),
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "uint8_mismatches": int((u_diff > 0).sum()),
        "uint8_values": int(u_diff.size),
        "uint8_max_diff": int(u_diff.max()),
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for package in ("distilgan", "torch", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def export_model(
    model: Any,
    out: str | os.PathLike,
    fmt: str = "onnx",
    precision: str = "fp32",
    batch: int | None = None,
    calibration_size: int = 512,
    calibration_seed: int = 0,
    keep_first: bool = False,
    keep_last: bool = False,
    preset: str = "performance",
    source: dict[str, Any] | None = None,
    quantized_model: Any | None = None,
) -> dict[str, Any]:
    """Write the export folder ``out`` atomically; returns the contents of distilgan-export.json.

    ``quantized_model``: ``model`` with its own fake quantisers (deploy.qat); an int8 export then
    keeps exactly those scales (ONNX QuantizeLinear/DequantizeLinear, OpenVINO FakeQuantize)
    instead of re-quantising with NNCF / onnxruntime post-training quantisation.
    """
    from distilgan.deploy.quantize import quantize_onnx, quantize_openvino

    check_choice(fmt, FORMATS, "format")
    check_choice(precision, PRECISIONS, "precision")
    if fmt == "openvino":
        ov = require("openvino", "--format openvino")
    own_scales = precision == "int8" and quantized_model is not None
    if fmt == "openvino" and precision == "int8" and not own_scales:
        require("nncf", "--precision int8 with --format openvino")
    started = time.perf_counter()
    info: dict[str, Any] = {
        "format": fmt,
        "precision": precision,
        "batch": batch if batch else "dynamic",
        "inputs": {"z": "float32 (N, z_dim)", "labels": "int64 (N,)"},
        "outputs": {"images": "float32 NCHW in [-1, 1]"},
        "source": source or {},
        **generator_facts(model),
    }
    calib = dict(z_dim=model.z_dim, num_classes=model.num_classes, size=calibration_size, seed=calibration_seed,
                 batch=batch or 1, keep_first=keep_first, keep_last=keep_last,
                 z_distribution=model_z_distribution(model), classes=model_classes(model))
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="distilgan-export-") as scratch:
        traced_onnx = Path(scratch) / "traced.onnx"
        # With own scales the traced graph already is the int8 model (QDQ pairs; OpenVINO: FakeQuantize).
        export_onnx(quantized_model if own_scales else model, traced_onnx, batch)
        if own_scales:
            info["quantization"] = {"method": "quantization-aware training: the model's own scales (QDQ)",
                                    "weights": "int8 symmetric per output channel",
                                    "activations": "int8/uint8 per tensor, ranges calibrated before QAT"}
        if fmt == "onnx":
            info["model_file"] = ONNX_FILE
            if precision == "fp32" or own_scales:
                traced_onnx.replace(tmp / ONNX_FILE)
            elif precision == "fp16":
                export_onnx(model, tmp / ONNX_FILE, batch, fp16=True)
            else:
                info["quantization"] = quantize_onnx(traced_onnx, tmp / ONNX_FILE, **calib)
        else:
            info["model_file"] = OPENVINO_FILE
            ov_model = to_openvino(traced_onnx)
            if precision == "int8" and not own_scales:
                ov_model, info["quantization"] = quantize_openvino(ov_model, preset=preset, **calib)
            ov.save_model(ov_model, str(tmp / OPENVINO_FILE), compress_to_fp16=precision == "fp16")
        info["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        info["size_bytes"] = sum(info["files"].values())
        info["versions"] = _versions()
        atomic_write_json(tmp / EXPORT_JSON, info, fsync=False)
        info["parity"] = parity(quantized_model if own_scales else model, tmp)
        info["export_seconds"] = round(time.perf_counter() - started, 2)
        atomic_write_json(tmp / EXPORT_JSON, info, fsync=False)
    return info


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Load a generator checkpoint and :func:`export_model` it, recording where it came from."""
    from distilgan.models import resolve_checkpoint
    from distilgan.utils.hashing import sha256_tree

    fmt = check_choice(options.get("fmt", "onnx"), FORMATS, "format")
    check_choice(options.get("precision", "fp32"), PRECISIONS, "precision")
    if fmt == "openvino":  # fail before the slow parts
        require("openvino", "--format openvino")
    folder = resolve_checkpoint(checkpoint)
    model = load_generator(folder)
    source = {"checkpoint": str(folder), "fingerprint": sha256_tree(folder)}
    return export_model(model, out, source=source, **options)


def parity_line(info: dict[str, Any]) -> str:
    p = info["parity"]
    return (f"parity vs PyTorch ({p['samples']} images, seed {p['seed']}): max abs error {p['max_abs_error']:.3g}, "
            f"mean {p['mean_abs_error']:.3g}; uint8 mismatches {p['uint8_mismatches']}/{p['uint8_values']} "
            f"(max diff {p['uint8_max_diff']})")
