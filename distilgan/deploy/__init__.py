"""Edge deployment: export (ONNX, OpenVINO IR), FP16/INT8, QAT, structured pruning, benchmarks,
and a runtime that needs no PyTorch.

    checkpoint --export.py--> folder: model.onnx | model.xml + model.bin, distilgan-export.json
               --quantize.py (INT8 PTQ: NNCF on OpenVINO, onnxruntime QDQ)
    qat.py     fine-tunes the student under fake quantisation, then exports INT8
    prune.py   removes channels to a MAC budget, distils back, saves a normal checkpoint
    bench.py   latency / throughput / size / FID of every variant, and the machine's peak rates
    runtime.py EdgeGenerator, EdgeTranslator: numpy + openvino or onnxruntime only
    translator_inputs.py  what an exported image translator is fed (pair-set sources, edits)

Two kinds of model export: generators (z, labels -> images) and image translators (images, edits
-> images); ``distilgan-export.json`` names the kind.

This module imports nothing heavy: ``runtime.py`` must stay importable without torch.
"""

from __future__ import annotations

from typing import Any

from distilgan.errors import UserError

FORMATS = ("onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")
EXPORT_JSON = "distilgan-export.json"
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"  # + model.bin beside it
GENERATOR, TRANSLATOR = "generator", "translator"  # distilgan-export.json "kind"
ONNX_METADATA_KEY = "distilgan"  # the export's facts as JSON in model.onnx metadata (a lone .onnx runs too)


def require(package: str, what: str) -> Any:
    """Import an optional package or raise a one-line UserError naming the pip extra to install."""
    from distilgan.utils.extras import need

    return need(package, what)


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise UserError(f"unknown {option} '{value}' (use one of: {', '.join(choices)})")
    return value


__all__ = ["EXPORT_JSON", "FORMATS", "GENERATOR", "ONNX_FILE", "ONNX_METADATA_KEY", "OPENVINO_FILE", "PRECISIONS",
           "TRANSLATOR", "check_choice", "require"]
