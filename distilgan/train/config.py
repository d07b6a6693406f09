"""The training configuration: one flat dataclass, resolved CLI > YAML file > saved run > defaults.

Every hyper-parameter of a run lives here so that ``RUN/config.yaml`` records the whole recipe and
``--resume`` can refuse to continue a run with a different one. The loop reads the generic fields
(batch, optimiser, schedule, EMA, checkpoint cadence); an objective reads its own (lambdas, gstep).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from distilgan.errors import UserError
from distilgan.utils.extras import need


@dataclass
class TrainConfig:
    # data
    data: str = ""  # distillation store folder
    real: str | None = None  # real dataset spec (optional GAN term on real images)
    out: str = ""  # run folder
    # student model (None: the model class's own default, resolved when the run starts)
    ngf: int | None = None
    ndf: int | None = None
    project_dim: int | None = None
    # length and batch (batch_size is global: split over DDP processes)
    batch_size: int = 128
    epochs: int = 150
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-time budget of one invocation: stop and save cleanly when spent
    # optimisers: Adam for G and D, linear LR decay to 0 from lr_decay_start (None: constant)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_start: int | None = None
    # distillation objective
    lambda_pixel: float = 0.2
    # constant (DiStyleGAN) or epoch-linear (TinyGAN: pixel_decay subtracted once per epoch, 0.2 - 0.01
    # per epoch = a 20-epoch warm-down); step-linear is how runs made before this key decayed it
    pixel_schedule: str = "constant"
    pixel_decay: float = 0.01  # per epoch under epoch-linear (per G step under the legacy step-linear)
    lambda_gan_g: float = 0.01
    lambda_gan_d: float = 0.2
    gstep: int = 10  # G's adversarial terms every gstep steps
    # EMA copy of G
    ema: bool = True
    ema_decay: float = 0.999
    ema_start: int = 0  # steps before which the EMA copy just follows G (BigGAN's ema_start)
    # BN statistics of the EMA copy: recompute (measured best, docs/training.md), average, or copy (legacy)
    ema_buffers: str = "recompute"
    # bookkeeping
    ckpt_every: int = 10  # epochs
    ckpt_every_steps: int | None = None  # also every this many steps (long epochs, slow machines)
    ckpt_every_minutes: float | None = 10.0  # and by wall time (None or 0: off)
    ckpt_keep: int | None = None  # keep the newest N step folders in checkpoints/ (None: all)
    grid_every: int = 1  # epochs
    log_every: int = 10  # steps
    grid_columns: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    store_in_memory: bool | None = None  # None: read the store into memory when it fits in 4 GiB
    amp: bool = False  # legacy spelling of precision bf16 on CUDA
    precision: str = "auto"  # auto, fp32 or bf16 autocast (train/precision.py)
    # NHWC activations; None: each network's preference (BigGAN: on, 1.8x with bf16 here; DiStyleGAN D on,
    # G off: oneDNN's channels_last BatchNorm backward is 2-10x slower than NCHW on CPU)
    channels_last: bool | None = None
    # metrics inside the loop (train/loop_metrics.py): names, samples per evaluation, cadence in steps
    metrics: str = ""  # comma list, e.g. "kid" or "kid,fid"; empty: none
    metric_n: int = 1000
    metric_every: int | None = None  # steps; None: at every checkpoint
    metric_ref: str | None = None  # statistics .npz or dataset; None: the run's --real data, else its store
    metric_classifier: str | None = None  # judge of the in-loop "ca" metric; None: cifar10-resnet56
    extra: dict[str, Any] = field(default_factory=dict)  # room for later objectives' settings


# Keys a run saved before they existed, and the value that reproduces what such a run did.
LEGACY_DEFAULTS = {"ema_buffers": "copy", "pixel_schedule": "step-linear"}

# Keys that may differ on --resume: where files are, which machine, how often we write things, and
# how long to train (to extend a finished run; with --lr-decay-start the decay then stretches to the
# new end). Everything else changes the maths of the run, so a difference is an error.
RESUME_FREE_KEYS = frozenset(
    {"data", "real", "out", "device", "workers", "amp", "ckpt_every", "ckpt_every_steps", "grid_every", "log_every",
     "epochs", "max_steps", "max_minutes", "precision", "channels_last", "store_in_memory", "ckpt_every_minutes", "ckpt_keep", "metrics", "metric_n", "metric_every", "metric_ref",
     "metric_classifier"}
)

FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation of a config dataclass (TrainConfig or a subclass with more keys)."""
    return FIELD_TYPES if cls is TrainConfig else {f.name: f.type for f in fields(cls)}


def _coerce(key: str, value: Any, cls: type = TrainConfig) -> Any:
    """Cast a YAML/CLI value to the field's type; a one-line error when it cannot be."""
    kind = str(_field_types(cls)[key])
    if value is None:
        if "None" in kind:
            return None
        raise UserError(f"config key '{key}' cannot be null (give a value or leave it out)")
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in {"true", "yes", "1", "on"}:
                    return True
                if value.lower() in {"false", "no", "0", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("dict"):
            if not isinstance(value, Mapping):
                raise ValueError(value)
            return dict(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"config key '{key}' has a bad value {value!r} (expected {kind})") from None


def normalise_keys(values: Mapping[str, Any], source: str, cls: type = TrainConfig) -> dict[str, Any]:
    """Accept ``lr-g`` or ``lr_g``; reject unknown keys, naming them."""
    types = _field_types(cls)
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in types:
            raise UserError(f"unknown config key '{raw_key}' in {source} (see docs/training.md for the keys)")
        out[key] = _coerce(key, value, cls)
    return out


def load_yaml(path: str | Path, cls: type = TrainConfig) -> dict[str, Any]:
    yaml = need("yaml")

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path} (check --config)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, Mapping):
        raise UserError(f"config file {path} must hold a mapping of key: value")
    return normalise_keys(values, str(path), cls)


def resolve_config(
    cli: Mapping[str, Any],
    file_values: Mapping[str, Any] | None = None,
    saved: Mapping[str, Any] | None = None,
    cls: type = TrainConfig,
) -> TrainConfig:
    """Defaults, then the saved run (on resume), then the YAML file, then the options given.

    ``cls`` is TrainConfig or a subclass carrying an objective's own keys (e.g. the teacher's).
    """
    merged: dict[str, Any] = dataclasses.asdict(cls())
    if saved is not None:
        merged.update(legacy_defaults(saved))
    for layer in (saved or {}, file_values or {}, {k: v for k, v in cli.items() if v is not None}):
        merged.update(normalise_keys(layer, "the options", cls))
    config = cls(**merged)
    validate(config)
    return config


def legacy_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The values of keys a saved run predates, chosen so that it resumes with the maths it had."""
    return {key: value for key, value in LEGACY_DEFAULTS.items() if key not in saved}


def legacy_notice(saved: Mapping[str, Any]) -> str | None:
    """One line naming the defaults an old run resumes with, or None for a current run."""
    implied = legacy_defaults(saved)
    if not implied:
        return None
    keys = ", ".join(f"{key}={value}" for key, value in implied.items())
    return f"this run predates {', '.join(implied)}; resuming with what it did then: {keys}"


CHOICES = {
    "pixel_schedule": ("constant", "epoch-linear", "step-linear"),
    "ema_buffers": ("average", "copy", "recompute"),
    "precision": ("auto", "fp32", "bf16"),
}


def validate(config: TrainConfig) -> None:
    def positive(name: str, allow_zero: bool = False) -> None:
        value = getattr(config, name)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            raise UserError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    for name in ("batch_size", "epochs", "gstep", "ckpt_every", "grid_every", "log_every", "grid_columns",
                 "ngf", "ndf", "project_dim", "max_steps", "lr_g", "lr_d", "ckpt_every_steps", "metric_every", "ckpt_keep", "max_minutes"):
        positive(name)
    for name in ("lambda_pixel", "pixel_decay", "lambda_gan_g", "lambda_gan_d", "workers", "lr_decay_start",
                 "ema_start", "ckpt_every_minutes"):
        positive(name, allow_zero=True)
    for name, choices in CHOICES.items():
        value = getattr(config, name)
        if value not in choices:
            raise UserError(f"{name} '{value}' does not exist (choose from {', '.join(choices)})")
    if config.metric_n < 2:
        raise UserError(f"metric_n must be >= 2, got {config.metric_n}")
    from distilgan.train.loop_metrics import parse_metrics

    parse_metrics(config.metrics)
    for name in ("beta1", "beta2", "ema_decay"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {getattr(config, name)}")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: TrainConfig, path: str | Path) -> None:
    yaml = need("yaml")

    from distilgan.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def check_resume_compatible(saved: Mapping[str, Any], current: TrainConfig,
                            free_keys: frozenset[str] = RESUME_FREE_KEYS) -> None:
    """Raise naming the first key whose value differs from the run being resumed."""
    now = config_to_dict(current)
    for key, old in saved.items():
        if key in free_keys or key not in now:
            continue
        if now[key] != old:
            raise UserError(
                f"--resume: '{key}' is {now[key]!r} but the run was started with {old!r} "
                f"(drop the option or use a new --out)"
            )
