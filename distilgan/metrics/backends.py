"""OpenVINO backend for the fid-helper Inception network: converted once, cached, validated by hash.

Why: on a CPU, torch runs the TorchScript Inception at ~120-300 ms per image; OpenVINO's CPU plugin
runs the same graph in FP32 (same numbers to float rounding) and, with AMX/AVX512-BF16, in BF16
several times faster. The input stays distilgan's own torch preprocessing (NVIDIA's bilinear resize,
(x - 128) / 128), so only the network changes.

The converted IR lives in ``<cache>/openvino/inception-<sha256[:16]>/`` (``<cache>`` is
``~/.cache/distilgan``, moved by ``DISTILGAN_CACHE``): ``model.xml``, ``model.bin`` (FP32 weights,
never compressed to FP16) and ``meta.json`` recording the TorchScript file's sha256. A folder whose
record does not match is rebuilt (with a one-line note); the folder is written with ``atomic_dir``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.extras import need

CACHE_FORMAT = "distilgan-openvino-inception/1"
# distilgan's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
OV_INSTALL_HINT = 'pip install "distilgan[deploy]" (or pip install openvino)'


def openvino_available() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def converted_dir(sha256: str) -> Path:
    """Where the IR of the TorchScript file with this sha256 is cached."""
    from distilgan.metrics.reference import cache_dir

    return cache_dir().parent / "openvino" / f"inception-{sha256[:16]}"


def _note(message: str) -> None:
    print(f"distilgan: note: {message}", file=sys.stderr, flush=True)


def cache_problem(folder: Path, sha256: str) -> str | None:
    """Why the cached IR in ``folder`` cannot be used for a file of this sha256 (None: it can)."""
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return "has no meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return "has an unreadable meta.json"
    if meta.get("format") != CACHE_FORMAT:
        return f"has format {meta.get('format')!r}, expected {CACHE_FORMAT!r}"
    if meta.get("source_sha256") != sha256:
        return f"records sha256 {str(meta.get('source_sha256'))[:12]}..., the network file has {sha256[:12]}..."
    bin_file = folder / "model.bin"
    if not (folder / "model.xml").is_file() or not bin_file.is_file() or bin_file.stat().st_size != meta.get("bin_bytes"):
        return "is missing model.xml/model.bin or has a model.bin of the wrong size"
    return None


def _convert(folder: Path, sha256: str, source: str, load_module: Callable[[], Any]) -> None:
    """TorchScript module -> OpenVINO IR (FP32 weights) in ``folder``, written atomically."""
    ov = need("openvino")
    import torch

    from distilgan.metrics.network import INCEPTION_SIZE
    from distilgan.utils.atomic import atomic_dir

    module = load_module()
    example = torch.zeros(2, 3, INCEPTION_SIZE, INCEPTION_SIZE)
    try:
        model = ov.convert_model(module, example_input=example)
    except Exception as err:  # noqa: BLE001 - a TorchScript graph OpenVINO's frontend cannot read
        raise UserError(f"OpenVINO cannot convert {Path(source).name} ({type(err).__name__}); use --backend torch") from None
    # The input is always distilgan's 299x299 preprocessing: a static spatial shape lets the CPU
    # plugin pick its kernels once; the batch stays dynamic.
    model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, INCEPTION_SIZE, INCEPTION_SIZE])})
    with atomic_dir(folder) as tmp:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)  # FP16 weights would break FP32 parity
        meta = {"format": CACHE_FORMAT, "source_sha256": sha256, "source": str(source), "openvino": ov.get_version(),
                "torch": torch.__version__, "bin_bytes": (tmp / "model.bin").stat().st_size}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def converted_model(sha256: str, source: str, load_module: Callable[[], Any]) -> tuple[Path, bool]:
    """(model.xml of the cached IR, whether the cache was reused); converts on a miss or a mismatch."""
    folder = converted_dir(sha256)
    if folder.exists():
        problem = cache_problem(folder, sha256)
        if problem is None:
            return folder / "model.xml", True
        _note(f"converted network cache {folder} {problem}: rebuilding it")
    else:
        _note(f"converting the FID network to OpenVINO once (cache: {folder})")
    _convert(folder, sha256, source, load_module)
    return folder / "model.xml", False


_CORE: Any = None
_RUNNERS: dict[tuple[str, int, str, int], "OpenVINORunner"] = {}


def shared_core() -> Any:
    """One ``openvino.Core`` per process, as OpenVINO recommends: each Core starts its own CPU plugin
    and thread arenas, and many of them (a network loaded per call) are a waste and a crash risk."""
    global _CORE
    if _CORE is None:
        ov = need("openvino")

        _CORE = ov.Core()
    return _CORE


class OpenVINORunner:
    """A compiled IR: float32 NCHW 299x299 batch -> float32 (N, 2048) features."""

    def __init__(self, xml: Path, precision: str, threads: int) -> None:
        ov = need("openvino")

        self.core = shared_core()
        model = self.core.read_model(str(xml))
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "INFERENCE_NUM_THREADS": int(threads),
                  "PERFORMANCE_HINT": "LATENCY"}  # one synchronous request using every thread we are given
        self.compiled = self.core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.version = ov.get_version()
        # What the plugin actually runs: a CPU without BF16 support silently runs f32.
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        actual = getattr(actual, "get_type_name", lambda: str(actual))()  # ov.Type -> "f32" / "bf16"
        self.inference_precision = {"f32": "fp32"}.get(actual, actual)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(self.request.get_output_tensor(0).data, np.float32)  # copy: the tensor is reused


def openvino_runner(sha256: str, source: str, load_module: Callable[[], Any], precision: str, threads: int) -> tuple[OpenVINORunner, bool]:
    """(compiled network, whether the converted IR came from the cache)."""
    if not openvino_available():
        raise UserError(f"--backend openvino needs OpenVINO ({OV_INSTALL_HINT}); or use --backend torch")
    xml, reused = converted_model(sha256, source, load_module)
    key = (str(xml), xml.stat().st_mtime_ns, precision, int(threads))
    if key in _RUNNERS:  # compiled once per process and setting (the IR file unchanged)
        return _RUNNERS[key], reused
    try:
        runner = OpenVINORunner(xml, precision, threads)
    except RuntimeError as err:  # e.g. a folder replaced by another process while we read it
        if not reused:
            raise UserError(f"OpenVINO cannot compile the converted network ({str(err).splitlines()[0][:120]})") from None
        _note(f"cannot read the converted network cache {xml.parent} ({type(err).__name__}): rebuilding it")
        _convert(xml.parent, sha256, source, load_module)
        runner, reused = OpenVINORunner(xml, precision, threads), False
    if runner.inference_precision != precision:
        _note(f"OpenVINO runs {runner.inference_precision}, not {precision}, on this CPU (recorded in the protocol)")
    _RUNNERS[key] = runner
    return runner, reused
