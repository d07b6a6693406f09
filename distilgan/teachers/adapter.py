"""What every teacher adapter shares: option checking, device choice, batching, fingerprints.

TorchScript files, StyleGAN2-ADA pickles, distilgan checkpoints and Python callables are all "a
callable on a device" once loaded, so they share :class:`CallableTeacher`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np

from distilgan.errors import UserError
from distilgan.teachers.base import Teacher

COMMON_OPTIONS: dict[str, Any] = {
    "device": "cpu",
    "output_range": (-1.0, 1.0),
    "truncation": None,
    "class_names": None,
    "clamp": False,
}


def take_options(options: dict[str, Any], adapter: str, specific: dict[str, Any]) -> dict[str, Any]:
    """Merge ``options`` over the common and adapter-specific defaults, checking names and values.

    ``None`` values count as "not given" so a CLI can pass every flag through unconditionally.
    """
    defaults = {**COMMON_OPTIONS, **specific}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for {adapter} teachers (known: {', '.join(sorted(defaults))})"
        )
    merged = dict(defaults)
    merged.update({key: value for key, value in options.items() if value is not None})
    device = str(merged["device"])
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise UserError(f"device '{device}' is not supported (use cpu or cuda)")
    merged["device"] = device
    try:
        low, high = (float(v) for v in merged["output_range"])
    except (TypeError, ValueError):
        raise UserError(f"output_range {merged['output_range']!r} is not two numbers (give e.g. 0 1)") from None
    if not high > low:
        raise UserError(f"output range ({low:g}, {high:g}) is empty (give LOW HIGH with LOW < HIGH)")
    merged["output_range"] = (low, high)
    if merged["truncation"] is not None:
        merged["truncation"] = float(merged["truncation"])
        if not merged["truncation"] > 0:
            raise UserError(f"truncation must be > 0, got {merged['truncation']:g}")
    names = merged["class_names"]
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",")]
    merged["class_names"] = list(names) if names is not None else None
    return merged


def apply_common(teacher: Teacher, opts: dict[str, Any]) -> None:
    """Set the attributes every adapter shares, after the adapter knows ``num_classes``."""
    teacher.output_range = opts["output_range"]
    teacher.truncation = opts["truncation"]
    teacher.clamp = bool(opts["clamp"])
    if opts["class_names"] is not None:
        teacher.class_names = opts["class_names"]
    if teacher.class_names is not None and len(teacher.class_names) != teacher.num_classes:
        raise UserError(
            f"{len(teacher.class_names)} class names given for a teacher with {teacher.num_classes} classes "
            "(give one name per class)"
        )


def torch_device(name: str) -> Any:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but torch sees no CUDA GPU (use device=cpu)")
    return torch.device(name)


def to_numpy(output: Any, what: str) -> np.ndarray:
    """A torch tensor or array-like from a teacher call as a numpy array."""
    if isinstance(output, (tuple, list)) and len(output) == 1:
        output = output[0]
    if hasattr(output, "detach"):
        return output.detach().float().cpu().numpy()
    try:
        return np.asarray(output)
    except Exception:  # noqa: BLE001 - anything that is not an array is the user's to fix
        raise UserError(f"{what} returned {type(output).__name__}, not an image array (return NCHW images)") from None


def module_fingerprint(module: Any, digest: "hashlib._Hash | None" = None) -> str:
    """sha256 over the state_dict of an nn.Module: names, dtypes, shapes and raw bytes."""
    import torch

    digest = digest or hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def pick(found: Any, given: Any, name: str, spec: str) -> int | None:
    """The value from the teacher itself or from an option; both given and different is an error."""
    try:
        found = int(found) if found is not None else None
        given = int(given) if given is not None else None
    except (TypeError, ValueError):
        raise UserError(f"{name} of {spec} is not an integer ({found!r} / {given!r})") from None
    if found is not None and given is not None and found != given:
        raise UserError(f"option {name}={given} contradicts the teacher's own {name}={found} ({spec}); drop the option")
    return found if found is not None else given


def _reason(err: BaseException) -> str:
    """The line of an exception that says what went wrong: TorchScript puts its own traceback
    first and the actual error ("RuntimeError: mat1 and mat2 shapes ...") last."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    last = lines[-1]
    for prefix in ("RuntimeError: ", "Error: "):
        if last.startswith(prefix):
            last = last[len(prefix):]
    return f"{type(err).__name__}: {last[:200]}"


def probe_shape(teacher: Teacher, spec: str = "the teacher", fix: str = "") -> tuple[int, ...]:
    """Run one sample (z = 0, the last label, so a too-large num_classes fails here too) through a
    teacher at load; returns its output shape (1, C, H, H). A failing call becomes one line naming
    ``fix``, the options that decide what the teacher is called with."""
    z = np.zeros((1, teacher.z_dim), np.float32)
    label = np.full(1, teacher.num_classes - 1, np.int64)
    try:
        out = np.asarray(teacher._generate(z, label))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - the teacher is the user's code: its failure is the user's to fix
        raise UserError(f"{spec} failed on a probe sample (z of shape (1, {teacher.z_dim}), label "
                        f"{teacher.num_classes - 1}): {_reason(err)}; {fix or 'check the teacher'}") from None
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[2] != out.shape[3]:
        raise UserError(
            f"probing {spec} gave output of shape {tuple(out.shape)}; expected square NCHW images (1, C, H, H)"
        )
    return tuple(int(n) for n in out.shape)


class CallableTeacher(Teacher):
    """A teacher wrapping ``fn(z, labels) -> images``, run in batches, with torch or numpy inputs."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        device: str = "cpu",
        inputs: str = "torch",
        label_encoding: str = "int",
        batch_size: int = 256,
        call_kwargs: dict[str, Any] | None = None,
        fingerprint_fn: Callable[[], str],
    ) -> None:
        if inputs not in ("torch", "numpy"):
            raise UserError(f"inputs must be torch or numpy, got '{inputs}'")
        if label_encoding not in ("int", "onehot"):
            raise UserError(f"label_encoding must be int or onehot, got '{label_encoding}'")
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.fn, self.device, self.inputs = fn, device, inputs
        self.label_encoding, self.batch_size = label_encoding, int(batch_size)
        self.call_kwargs = call_kwargs or {}
        self._fingerprint_fn = fingerprint_fn
        self._fingerprint: str | None = None

    def _labels_for_call(self, labels: np.ndarray) -> np.ndarray:
        if self.label_encoding == "onehot":
            return np.eye(self.num_classes, dtype=np.float32)[labels]
        return labels

    def _call(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        labels = self._labels_for_call(labels)
        if self.inputs == "numpy":
            return to_numpy(self.fn(z, labels, **self.call_kwargs), self.spec or "the teacher")
        import torch

        with torch.inference_mode():
            zt = torch.from_numpy(z).to(self.device)
            lt = torch.from_numpy(labels).to(self.device)
            return to_numpy(self.fn(zt, lt, **self.call_kwargs), self.spec or "the teacher")

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._in_batches(z, labels, self.batch_size, self._call)

    def _torch_call(self, z: Any, labels: Any) -> Any:
        if self.inputs != "torch":
            return None
        import torch

        if self.label_encoding == "onehot":
            labels = torch.nn.functional.one_hot(labels.long(), self.num_classes).to(z.dtype)
        output = self.fn(z.to(self.device), labels.to(self.device), **self.call_kwargs)
        return output if isinstance(output, torch.Tensor) else None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self._fingerprint_fn()
        return self._fingerprint


def fill_metadata(teacher: Teacher, obj: Any, opts: dict[str, Any], spec: str) -> None:
    """z_dim / num_classes / resolution / channels / class_names from ``obj`` or options, else probe."""
    teacher.z_dim = pick(first_attr(obj, ("z_dim",)), opts.get("z_dim"), "z_dim", spec)  # type: ignore[assignment]
    teacher.num_classes = pick(  # type: ignore[assignment]
        first_attr(obj, ("num_classes", "c_dim")), opts.get("num_classes"), "num_classes", spec
    )
    for name in ("z_dim", "num_classes"):
        if getattr(teacher, name) is None:
            raise UserError(f"{spec} does not say its {name} (give the option {name}=...)")
    if teacher.num_classes < 1 or teacher.z_dim < 1:
        raise UserError(f"{spec} has z_dim={teacher.z_dim}, num_classes={teacher.num_classes}; both must be >= 1")
    resolution = pick(first_attr(obj, ("resolution", "img_resolution")), opts.get("resolution"), "resolution", spec)
    channels = first_attr(obj, ("channels", "img_channels"))
    # Always probe: a wrong z_dim / num_classes / label encoding fails here as one line, not as a
    # TorchScript traceback in the middle of sampling; the probe also gives unknown sizes.
    teacher.resolution, teacher.channels = 0, 0  # unknown until the probe
    said = {"z_dim": teacher.z_dim, "num_classes": teacher.num_classes, "label_encoding": opts.get("label_encoding")}
    fix = ("check " + ", ".join(f"{k}={v}" for k, v in said.items() if v is not None)
           + " (set them with --teacher-option KEY=VALUE)")
    shape = probe_shape(teacher, spec, fix)
    probed_channels, probed_resolution = shape[1], shape[2]
    for name, declared, seen in (("resolution", resolution, probed_resolution), ("channels", channels, probed_channels)):
        if declared is not None and int(declared) != seen:
            where = "--teacher-option resolution" if name == "resolution" else "its channels attribute"
            raise UserError(f"{spec} says {name}={declared} but a probe sample has {name} {seen} (output shape "
                            f"{shape}, NCHW); fix the teacher or {where}")
    resolution, channels = probed_resolution, probed_channels
    teacher.resolution, teacher.channels = int(resolution), int(channels)  # type: ignore[arg-type]
    names = getattr(obj, "class_names", None)
    teacher.class_names = [str(n) for n in names] if names is not None else None
    apply_common(teacher, opts)
