"""The black-box teacher interface and the spec-string registry.

A teacher is anything that maps a batch of latent vectors and integer labels to images. distilgan
never looks inside: it only needs ``z_dim``, ``num_classes``, ``resolution``, ``channels`` and
:meth:`Teacher.generate`. Adapters (one per file in this package) turn ONNX graphs, TorchScript
files, Python callables, NVIDIA StyleGAN2-ADA pickles and distilgan checkpoints into teachers.

Spec strings choose the adapter: ``onnx:PATH``, ``torchscript:PATH``, ``python:MODULE:CALLABLE``,
``stylegan2-ada:PKL``, ``distilgan:DIR`` (a checkpoint folder), ``builtin:NAME``; a bare path is
guessed from its suffix (``.onnx``, ``.pt``/``.ts``, ``.pkl``, a folder with ``config.json``).
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from distilgan.errors import UserError

# scheme -> "module:function" building a Teacher from (location, options)
ADAPTERS: dict[str, str] = {
    "onnx": "distilgan.teachers.onnx:load",
    "torchscript": "distilgan.teachers.torchscript:load",
    "python": "distilgan.teachers.python_callable:load",
    "stylegan2-ada": "distilgan.teachers.stylegan2_ada:load",
    "distilgan": "distilgan.teachers.checkpoint:load",
    "builtin": "distilgan.teachers.builtin:load",
}


class Teacher(abc.ABC):
    """A class-conditional generator seen as a black box.

    Subclasses set the attributes and implement :meth:`_generate`; callers use :meth:`generate`,
    which checks shapes and ranges so a misbehaving teacher fails with a clear message instead of
    poisoning a distillation set.
    """

    spec: str = ""
    z_dim: int
    num_classes: int
    resolution: int
    channels: int = 3
    class_names: list[str] | None = None
    #: (low, high) of the teacher's own output; mapped linearly to [-1, 1].
    output_range: tuple[float, float] = (-1.0, 1.0)
    #: True when the adapter applies ``truncation`` itself (StyleGAN's psi in w space);
    #: otherwise the sampler truncates z (truncated normal) before calling the teacher.
    native_truncation: bool = False
    truncation: float | None = None
    #: Clip raw outputs to ``output_range`` before the range check (NVIDIA's generate.py does).
    clamp: bool = False

    @abc.abstractmethod
    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """float32 z (N, z_dim), int64 labels (N,) -> NCHW images in ``output_range``."""

    def _in_batches(self, z: np.ndarray, labels: np.ndarray, batch_size: int,
                    call: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """The batching every adapter shares: split into ``batch_size`` rows, ``call`` each part,
        concatenate, and clip to ``output_range`` when ``clamp`` is on; float32 NCHW."""
        parts = [call(z[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(z), batch_size)]
        if not parts:
            return np.zeros((0, self.channels, self.resolution, self.resolution), np.float32)
        images = np.asarray(np.concatenate(parts) if len(parts) > 1 else parts[0], dtype=np.float32)
        if self.clamp:
            images = np.clip(images, self.output_range[0], self.output_range[1])
        return images

    def _torch_call(self, z: Any, labels: Any) -> Any:
        """Adapters whose generator is a torch module: the raw output of (z, labels) tensors, with
        autograd. None: this teacher gives no gradients (ONNX, numpy callables, the procedural toy)."""
        return None

    def torch_generate(self, z: Any, labels: Any) -> Any:
        """z (N, z_dim) float tensor, labels (N,) long tensor -> NCHW images in [-1, 1] *with autograd*, for
        optimising z (``distilgan invert``); the same function as ``generate``, without batching or the
        range check. A teacher with no torch module: a one-line error saying what does work."""
        images = self._torch_call(z, labels)
        if images is None:
            raise UserError(f"teacher {self.spec or type(self).__name__} gives no gradients (an ONNX file, a numpy "
                            "callable or the procedural toy): invert it with a trained --encoder alone (distilgan "
                            "train-encoder), or give a torch teacher (distilgan checkpoint, TorchScript, StyleGAN2-ADA)")
        low, high = (float(v) for v in self.output_range)
        if self.clamp:
            images = images.clamp(low, high)
        if (low, high) == (-1.0, 1.0):
            return images
        return (images - low) * (2.0 / (high - low)) - 1.0

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """sha256 of the weights (file or folder) so a manifest pins the exact teacher."""

    def generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """float32 z (N, z_dim), int64 labels (N,) -> float32 NCHW images in [-1, 1]."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise UserError(f"z has shape {tuple(z.shape)}, teacher expects (N, {self.z_dim})")
        if labels.shape != (z.shape[0],):
            raise UserError(f"labels have shape {tuple(labels.shape)}, expected ({z.shape[0]},)")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(
                f"label {int(labels.max() if labels.max() >= self.num_classes else labels.min())} is outside "
                f"the teacher's classes 0..{self.num_classes - 1}"
            )
        out = np.asarray(self._generate(z, labels), dtype=np.float32)
        expected = (z.shape[0], self.channels, self.resolution, self.resolution)
        if out.shape != expected:
            raise UserError(
                f"teacher {self.spec} returned images of shape {tuple(out.shape)}, expected {expected} "
                "(NCHW); check --resolution/--channels or the teacher's output"
            )
        return normalize_range(out, self.output_range, self.spec)

    def describe(self) -> dict[str, Any]:
        """What a manifest or protocol records about this teacher."""
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint(),
            "z_dim": self.z_dim,
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "channels": self.channels,
            "class_names": self.class_names,
            "output_range": list(self.output_range),
            "truncation": self.truncation,
            "native_truncation": self.native_truncation,
        }


# A small slack for resampling ringing and float error before we call an output out of range.
RANGE_TOLERANCE = 0.05
# A batch spanning less than this fraction of the declared range is flat: ~5 of the 256 uint8 levels
# (a constant teacher, or e.g. --output-range 0 255 on a [-1, 1] teacher: an all-black set)
FLAT_FRACTION = 0.02
_USUAL_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


def suggest_output_range(lo_seen: float, hi_seen: float) -> str:
    """The narrowest usual range (0 1, -1 1, 0 255) holding what a teacher returned, as flag values."""
    for low, high in _USUAL_RANGES:
        slack = RANGE_TOLERANCE * (high - low)
        if lo_seen >= low - slack and hi_seen <= high + slack:
            return f"{low:g} {high:g}"
    return f"{np.floor(lo_seen):g} {np.ceil(hi_seen):g}"


def check_not_flat(images: np.ndarray, output_range: Sequence[float], spec: str = "") -> None:
    """Refuse a batch of [-1, 1] images (``generate``'s output) that is constant or fills only a sliver
    of the declared ``output_range``: either the teacher is broken or the range is wrong."""
    if images.size == 0:
        return
    lo, hi = float(images.min()), float(images.max())  # [-1, 1] units
    if hi - lo >= 2.0 * FLAT_FRACTION:
        return
    low, high = float(output_range[0]), float(output_range[1])
    raw_lo, raw_hi = (low + (v + 1.0) * 0.5 * (high - low) for v in (lo, hi))  # the teacher's own units
    if hi == lo:
        raise UserError(f"teacher {spec} returned a constant batch (every pixel {raw_lo:.4g}): it is broken or ignores "
                        "its inputs; check the teacher and its --teacher-option settings")
    raise UserError(
        f"teacher {spec} returned pixels only in [{raw_lo:.4g}, {raw_hi:.4g}], {100 * (hi - lo) / 2:.2g}% of the "
        f"declared --output-range {low:g} {high:g}, so every image would be flat; give the teacher's real range "
        f"(e.g. --output-range {suggest_output_range(raw_lo, raw_hi)})"
    )


def normalize_range(images: np.ndarray, output_range: Sequence[float], spec: str = "") -> np.ndarray:
    """Map ``output_range`` linearly to [-1, 1] and reject outputs far outside it."""
    low, high = float(output_range[0]), float(output_range[1])
    if not high > low:
        raise UserError(f"output range ({low}, {high}) is empty; give --output-range LOW HIGH with LOW < HIGH")
    if not np.isfinite(images).all():
        raise UserError(f"teacher {spec} returned NaN or infinite pixels")
    span = high - low
    lo_seen, hi_seen = float(images.min(initial=low)), float(images.max(initial=high))
    if lo_seen < low - RANGE_TOLERANCE * span or hi_seen > high + RANGE_TOLERANCE * span:
        seen_lo, seen_hi = float(images.min()), float(images.max())
        raise UserError(
            f"teacher {spec} returned pixels in [{seen_lo:.4g}, {seen_hi:.4g}], outside its declared range "
            f"[{low:g}, {high:g}]; give the right --output-range (e.g. --output-range "
            f"{suggest_output_range(seen_lo, seen_hi)})"
        )
    if (low, high) == (-1.0, 1.0):
        return images
    return (images - low) * (2.0 / span) - 1.0


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``scheme:location``; guess the scheme of a bare path from what it is."""
    if not spec:
        raise UserError("empty teacher spec; give e.g. onnx:model.onnx or builtin:toy")
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in ADAPTERS:
        return scheme, rest
    if sep and len(scheme) > 1 and not Path(spec).exists():
        known = ", ".join(f"{name}:" for name in ADAPTERS)
        raise UserError(f"unknown teacher scheme '{scheme}:' in '{spec}'; use one of {known}")
    path = Path(spec)
    suffix = path.suffix.lower()
    if path.is_dir() and (path / "config.json").exists():
        return "distilgan", spec
    if suffix == ".onnx":
        return "onnx", spec
    if suffix in {".pt", ".ts", ".pth", ".jit"}:
        return "torchscript", spec
    if suffix == ".pkl":
        return "stylegan2-ada", spec
    known = ", ".join(f"{name}:" for name in ADAPTERS)
    raise UserError(f"cannot tell what kind of teacher '{spec}' is; prefix it with one of {known}")


def load_teacher(spec: str, **options: Any) -> Teacher:
    """Build a teacher from a spec string.

    Options understood by every adapter: ``device`` ("cpu"/"cuda"), ``output_range`` (low, high),
    ``truncation`` (float or None). Adapter-specific options (ONNX input names, StyleGAN noise
    mode, ...) are documented in each adapter; unknown ones raise :class:`UserError`.
    """
    scheme, location = parse_spec(spec)
    module_name, func_name = ADAPTERS[scheme].split(":")
    loader: Callable[..., Teacher] = getattr(importlib.import_module(module_name), func_name)
    teacher = loader(location, **options)
    teacher.spec = f"{scheme}:{location}"
    return teacher


def require_file(path: str, what: str = "teacher file") -> Path:
    """Existing file or a one-line error naming it."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise UserError(f"{what} not found: {path} (check the path)")
    if not resolved.is_file():
        raise UserError(f"{what} is not a file: {path}")
    return resolved
