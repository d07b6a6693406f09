"""Export a student checkpoint (a generator or an image translator) to ONNX or OpenVINO IR at fp32,
fp16 or int8, with a parity check.

The export folder holds the model (``model.onnx``, or ``model.xml`` + ``model.bin``) and
``distilgan-export.json``: the source checkpoint's fingerprint, format, precision, batch, class
names, z_dim, resolution, MACs, the z distribution and classes the model was trained on (the
edge runtime samples with them; INT8 calibration and parity draw from them), the quantisation
recipe, and parity figures against PyTorch (max/mean abs error on fixed z, and how many uint8
pixel values differ).

Graph contract: a generator takes ``z`` float32 (N, z_dim) and ``labels`` int64 (N,) and gives
``images`` float32 NCHW in [-1, 1]; a translator (``"kind": "translator"``) takes ``images`` float32
NCHW in [-1, 1] and ``edits`` int64 (N,) (only when it does more than one edit: the exporter drops an
unused input) and gives ``translated``. N is dynamic unless ``batch`` fixes it. The ONNX file also
carries metadata (z_dim, num_classes, resolution, class_names) so ``onnx:`` teachers read it directly,
and the runtime's facts as JSON under the key ``distilgan`` so a lone model.onnx runs.

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
    GENERATOR,
    ONNX_FILE,
    ONNX_METADATA_KEY,
    OPENVINO_FILE,
    PRECISIONS,
    TRANSLATOR,
    check_choice,
    require,
)
from distilgan.deploy.facts import (  # noqa: F401 - load_generator, generator_facts: imported from here too
    generator_facts,
    graph_contract,
    load_exportable,
    load_generator,
    model_facts,
    model_kind,
    runtime_facts,
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
    """Trace ``model`` to ONNX (TorchScript exporter) with the inputs and output of :func:`graph_contract`."""
    need("onnx")
    import torch

    class _Half(torch.nn.Module):
        # fp16 weights and compute inside, float32 at the graph's edges (same contract as fp32)
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half(), *indices).float()

    module = _bake_parametrizations(model)
    module = _Half(module.half()).eval() if fp16 else module.eval()
    inputs, outputs = graph_contract(model)
    n = batch or 2
    if "z" in inputs:
        args: tuple = (torch.zeros(n, model.z_dim), torch.zeros(n, dtype=torch.long))
    else:  # a one-edit translator is traced on images alone (forward's edits default to None)
        args = (torch.zeros(n, model.channels, model.resolution, model.resolution),
                torch.zeros(n, dtype=torch.long))[: len(inputs)]
    dynamic = None if batch else {name: {0: "batch"} for name in (*inputs, *outputs)}
    path = Path(path)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, args, str(path), input_names=list(inputs), output_names=list(outputs),
                dynamic_axes=dynamic, opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False,
            )
    except torch.onnx.errors.OnnxExporterError as err:  # e.g. BigGAN generators (not supported yet)
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot export {type(model).__name__} to ONNX ({first}); export supports DiStyleGAN students "
                        "and UNet translators") from None
    stamp_onnx(path, model, batch)
    return path


def stamp_onnx(path: str | os.PathLike, model: Any, batch: int | None, precision: str | None = None) -> None:
    """Write the model's facts into the ONNX file's metadata (replacing any there)."""
    onnx = need("onnx")
    graph = onnx.load(str(path))
    facts = {**runtime_facts(model), "batch": batch or "dynamic", "precision": precision}
    meta = {ONNX_METADATA_KEY: json.dumps(facts), "resolution": model.resolution, "producer": "distilgan export"}
    if facts["kind"] == GENERATOR:  # what `onnx:` teachers read
        meta.update(z_dim=model.z_dim, num_classes=model.num_classes, class_names=json.dumps(facts["class_names"]))
    del graph.metadata_props[:]
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(graph, str(path))


def to_openvino(onnx_path: str | os.PathLike) -> Any:
    ov = require("openvino", "--format openvino")
    return ov.convert_model(str(onnx_path))


def parity(model: Any, export_dir: str | os.PathLike, n: int = PARITY_SAMPLES, seed: int = 0,
           pairs: str | os.PathLike | None = None) -> dict[str, Any]:
    """Exported model against PyTorch on a fixed batch: a generator on fixed z (seed, its z
    distribution, balanced labels over its classes); a translator on ``pairs``' source images with
    their edits when given, else on synthetic images with balanced edits (translator_inputs.py)."""
    import torch

    from distilgan.deploy.runtime import open_export

    if model_kind(model) == GENERATOR:
        distribution = model_z_distribution(model)
        first = distribution.sample(rng(seed), n, model.z_dim)
        second = balanced_labels(0, n, model_classes(model))
        inputs: dict[str, Any] = {"z_distribution": distribution.to_dict()}
    else:
        from distilgan.deploy.translator_inputs import translator_inputs

        chosen = translator_inputs(runtime_facts(model), n, seed, pairs)
        first, second = chosen.arrays()
        inputs = {"inputs": chosen.described}
    with torch.inference_mode():
        reference = model(torch.from_numpy(first), torch.from_numpy(second)).float().numpy()
    exported = open_export(export_dir).run(first, second)
    diff = np.abs(exported - reference)
    u_diff = float_to_uint8(exported).astype(np.int16) - float_to_uint8(reference).astype(np.int16)
    mse = float((u_diff.astype(np.float64) ** 2).mean())
    return {
        "samples": len(first),
        "seed": seed,
        **inputs,
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "uint8_mismatches": int((u_diff != 0).sum()),
        "uint8_values": int(u_diff.size),
        "uint8_max_diff": int(np.abs(u_diff).max()),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse)),  # of the uint8 images
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
    calib_data: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write the export folder ``out`` atomically; returns the contents of distilgan-export.json.

    ``quantized_model``: ``model`` with its own fake quantisers (deploy.qat); an int8 export then
    keeps exactly those scales (ONNX QuantizeLinear/DequantizeLinear, OpenVINO FakeQuantize)
    instead of re-quantising with NNCF / onnxruntime post-training quantisation.
    ``calib_data``: a pair set whose source images calibrate a translator's int8 ranges (and feed
    its parity check); a generator is calibrated on its own z and labels.
    """
    from distilgan.deploy.quantize import quantize_onnx, quantize_openvino

    check_choice(fmt, FORMATS, "format")
    check_choice(precision, PRECISIONS, "precision")
    kind = model_kind(model)
    own_scales = precision == "int8" and quantized_model is not None
    post_training = precision == "int8" and not own_scales
    check_calib_data(kind, post_training, calib_data)
    if fmt == "openvino":
        ov = require("openvino", "--format openvino")
    if fmt == "openvino" and post_training:
        require("nncf", "--precision int8 with --format openvino")
    started = time.perf_counter()
    inputs, outputs = graph_contract(model)
    info: dict[str, Any] = {
        "format": fmt,
        "precision": precision,
        "batch": batch if batch else "dynamic",
        "inputs": inputs,
        "outputs": outputs,
        "source": source or {},
        **model_facts(model),
    }
    feeds: list[dict[str, np.ndarray]] = []
    if post_training:  # before any tracing: a bad --calib-data fails in seconds
        feeds, calibration = _calibration(model, calibration_size, calibration_seed, batch or 1, calib_data)
        calib = dict(feeds=feeds, calibration=calibration, keep_first=keep_first, keep_last=keep_last)
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
            stamp_onnx(tmp / ONNX_FILE, model, batch, precision)  # quantize_static writes a new model
        else:
            info["model_file"] = OPENVINO_FILE
            ov_model = to_openvino(traced_onnx)
            if post_training:
                ov_model, info["quantization"] = quantize_openvino(ov_model, preset=preset, **calib)
            ov.save_model(ov_model, str(tmp / OPENVINO_FILE), compress_to_fp16=precision == "fp16")
        info["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        info["size_bytes"] = sum(info["files"].values())
        info["versions"] = _versions()
        atomic_write_json(tmp / EXPORT_JSON, info, fsync=False)
        info["parity"] = parity(quantized_model if own_scales else model, tmp, pairs=calib_data)
        info["export_seconds"] = round(time.perf_counter() - started, 2)
        atomic_write_json(tmp / EXPORT_JSON, info, fsync=False)
    return info


def check_calib_data(kind: str, int8: bool, calib_data: str | os.PathLike | None, bench: bool = False) -> None:
    """A translator's post-training int8 needs a pair set; nothing else takes one (one-line errors).

    ``bench``: ``calib_data`` also feeds a benchmarked translator's timing and quality inputs, so there
    it is welcome without int8 too."""
    if calib_data is not None and kind != TRANSLATOR:
        raise UserError("--calib-data is a pair set for an image translator; a generator is calibrated on its own z "
                        "and labels (leave it out)")
    if calib_data is not None and not int8 and not bench:
        raise UserError("--calib-data calibrates --precision int8 (leave it out)")
    if kind == TRANSLATOR and int8 and calib_data is None:
        raise UserError("--precision int8 of an image translator needs --calib-data PAIRS (a pair set from distilgan "
                        "pairs, e.g. the one it was distilled from: its source images calibrate the int8 ranges)")


def _calibration(model: Any, size: int, seed: int, batch: int,
                 calib_data: str | os.PathLike | None) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """(feeds, record) of the int8 calibration: a generator's own inputs, a translator's pair-set sources."""
    if model_kind(model) == TRANSLATOR:
        from distilgan.deploy.translator_inputs import translator_calibration

        assert calib_data is not None  # export_model refuses a translator's int8 without it
        return translator_calibration(calib_data, runtime_facts(model), size, seed, batch)
    from distilgan.deploy.quantize import generator_calibration

    return generator_calibration(model.z_dim, model.num_classes, size, seed, batch,
                                 model_z_distribution(model), model_classes(model))


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Load a generator or translator checkpoint and :func:`export_model` it, recording where it came from."""
    from distilgan.models import resolve_checkpoint
    from distilgan.utils.hashing import sha256_tree

    fmt = check_choice(options.get("fmt", "onnx"), FORMATS, "format")
    check_choice(options.get("precision", "fp32"), PRECISIONS, "precision")
    if fmt == "openvino":  # fail before the slow parts
        require("openvino", "--format openvino")
    folder = resolve_checkpoint(checkpoint)
    model = load_exportable(folder)
    source = {"checkpoint": str(folder), "fingerprint": sha256_tree(folder)}
    return export_model(model, out, source=source, **options)


def parity_line(info: dict[str, Any]) -> str:
    p = info["parity"]
    psnr = p.get("psnr_db")  # absent in exports made before it was recorded
    shown = "" if psnr is None else f", PSNR {psnr:.1f} dB" if psnr != float("inf") else ", PSNR inf (identical)"
    return (f"parity vs PyTorch ({p['samples']} images, seed {p['seed']}): max abs error {p['max_abs_error']:.3g}, "
            f"mean {p['mean_abs_error']:.3g}; uint8 mismatches {p['uint8_mismatches']}/{p['uint8_values']} "
            f"(max diff {p['uint8_max_diff']}){shown}")
