"""The training configuration: nested sections, written once, resolved CLI > YAML > saved run > defaults.

A run's config is a :class:`RunConfig` of four sections: ``data`` (where batches come from), ``loop``
(batch, optimiser, schedule, EMA, checkpoint cadence, metrics: what :class:`Trainer` reads), ``model``
and ``objective`` (what one kind of run builds and optimises; the section classes are in sections.py).
A kind (``distill``, ``train-teacher``, ``finetune``, ``distill-i2i``, ``train-encoder``) names its
section classes, its own defaults and its in-loop metrics, so a teacher run records no ``lambda_pixel``. Each field carries its help and checks in its metadata: the commands' options
(``add_config_options``), ``config.yaml`` and the validation all come from the one definition.

Plain dataclasses rather than jsonargparse/tyro/pydantic: the resolution order, the resume check and
the reading of old flat ``config.yaml`` files are ours either way, and the core stays dependency-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from distilgan.errors import UserError
from distilgan.utils import argtypes
from distilgan.utils.extras import need
from distilgan.train.sections import (  # noqa: F401  (the sections are part of this module's API)
    opt,
    DistillDataConfig,
    TeacherDataConfig,
    FinetuneDataConfig,
    LoopConfig,
    StudentModelConfig,
    DistillObjectiveConfig,
    TeacherModelConfig,
    GANObjectiveConfig,
    I2IDataConfig,
    I2IModelConfig,
    I2IObjectiveConfig,
    EncoderDataConfig,
    EncoderModelConfig,
    EmptySection,
)


@dataclass(frozen=True)
class RunKind:
    name: str
    data: type
    model: type
    objective: type
    defaults: Mapping[str, Any] = field(default_factory=dict)  # this kind's own defaults, by key
    metrics: tuple[str, ...] | None = None  # the in-loop metrics it takes (None: loop_metrics.IN_LOOP_METRICS)


# The EMA half-lives keep what decay 0.999 per update did at each kind's default batch:
# 128 * ln 0.5 / ln 0.999 = 88.7k images (distill), 64 * ... = 44.3k (one G step per 4 D steps of 64).
KINDS: dict[str, RunKind] = {
    "distill": RunKind("distill", DistillDataConfig, StudentModelConfig, DistillObjectiveConfig),
    "train-teacher": RunKind("train-teacher", TeacherDataConfig, TeacherModelConfig, GANObjectiveConfig,
                             {"batch_size": 64, "epochs": 500, "beta1": 0.0, "ema_start": 4000,  # BigGAN C10
                              "ema_kimg": 44.3}),
    # fine-tuning runs are short and their batch is the task's: the fixed per-update decay they always had
    "finetune": RunKind("finetune", FinetuneDataConfig, EmptySection, EmptySection,
                        {"ema_kimg": None, "ema_decay": 0.999}),
    # pix2pix's batch is 1-4 at 256x256; 64 small images keep BatchNorm statistics sound on a CPU
    "distill-i2i": RunKind("distill-i2i", I2IDataConfig, I2IModelConfig, I2IObjectiveConfig,
                           {"batch_size": 64, "epochs": 100, "ema_kimg": 10.0, "metric_n": 256},
                           metrics=("l1", "psnr", "flip")),
    "train-encoder": RunKind("train-encoder", EncoderDataConfig, EncoderModelConfig, EmptySection,
                             {"epochs": 20, "ema_kimg": 10.0}, metrics=()),
}
SECTIONS = ("data", "loop", "model", "objective")


@dataclass
class RunConfig:
    kind: str = "distill"
    data: Any = None
    loop: LoopConfig = field(default_factory=LoopConfig)
    model: Any = None
    objective: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. what a fine-tuning run tunes

    def __post_init__(self) -> None:
        kind = KINDS[self.kind]
        self.data = kind.data() if self.data is None else self.data
        self.model = kind.model() if self.model is None else self.model
        self.objective = kind.objective() if self.objective is None else self.objective


def section_classes(kind: str) -> dict[str, type]:
    k = KINDS[kind]
    return {"data": k.data, "loop": LoopConfig, "model": k.model, "objective": k.objective}


def key_fields(kind: str) -> dict[str, tuple[str, dataclasses.Field]]:
    """Every key of a kind -> (its section, its field); keys are unique across a kind's sections."""
    return {f.name: (section, f) for section, cls in section_classes(kind).items() for f in fields(cls)}


def kind_defaults(kind: str) -> dict[str, Any]:
    values = {key: getattr(section_classes(kind)[section](), key) for key, (section, _) in key_fields(kind).items()}
    values.update(KINDS[kind].defaults)
    return values


# Keys a run saved before they existed, and the value that reproduces what such a run did.
LEGACY_DEFAULTS = {"ema_buffers": "copy", "pixel_schedule": "step-linear", "ema_kimg": None}
# Every key any kind has had: a flat config.yaml of the one-class era recorded them all.
_ALL_KEYS = frozenset(k for kind in KINDS for k in key_fields(kind)) | {"extra"}


def flatten(values: Mapping[str, Any], kind: str, legacy: bool = False) -> dict[str, Any]:
    """Section mappings ({"loop": {...}}) or flat keys (old config.yaml, CLI) -> flat keys.

    ``legacy``: a saved run may carry keys of other kinds (a flat teacher config recorded
    ``lambda_pixel``); those are dropped instead of refused."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            flat.update(value)
        elif key != "kind":
            flat[key] = value
    if legacy:
        own = key_fields(kind)
        flat = {k: v for k, v in flat.items() if k in own or k == "extra" or k not in _ALL_KEYS}
    return flat


def _coerce(key: str, value: Any, kind_of: str) -> Any:
    """Cast a YAML/CLI value to the field's type; a one-line error when it cannot be."""
    if value is None:
        if "None" in kind_of:
            return None
        raise UserError(f"config key '{key}' cannot be null (give a value or leave it out)")
    try:
        if kind_of.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in {"true", "yes", "1", "on"}:
                    return True
                if value.lower() in {"false", "no", "0", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if kind_of.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind_of.startswith("float"):
            return float(value)
        if kind_of.startswith("dict"):
            if not isinstance(value, Mapping):
                raise ValueError(value)
            return dict(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"config key '{key}' has a bad value {value!r} (expected {kind_of})") from None


def normalise_keys(values: Mapping[str, Any], source: str, kind: str = "distill") -> dict[str, Any]:
    """Accept ``lr-g`` or ``lr_g``, flat or by section; reject unknown keys, naming them."""
    known = key_fields(kind)
    out: dict[str, Any] = {}
    for raw_key, value in flatten(values, kind).items():
        key = str(raw_key).replace("-", "_")
        if key == "extra":
            out[key] = _coerce(key, value, "dict")
        elif key not in known:
            raise UserError(f"unknown config key '{raw_key}' in {source} for {kind} (see docs/training.md for the keys)")
        else:
            out[key] = _coerce(key, value, str(known[key][1].type))
    return out


def load_yaml(path: str | Path, kind: str = "distill") -> dict[str, Any]:
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
    return normalise_keys(values, str(path), kind)


def build(kind: str, flat: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from flat keys (missing ones take the kind's defaults); validated."""
    merged = kind_defaults(kind)
    merged.update(normalise_keys(flat, "the options", kind))
    extra = merged.pop("extra", {})
    where = key_fields(kind)
    parts = {s: {k: v for k, v in merged.items() if where[k][0] == s} for s in SECTIONS}
    config = RunConfig(kind=kind, extra=dict(extra or {}),
                       **{s: section_classes(kind)[s](**parts[s]) for s in SECTIONS})
    validate(config)
    return config


def resolve_run_config(kind: str, cli: Mapping[str, Any], file_values: Mapping[str, Any] | None = None,
                       saved: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the saved run (on resume), then the YAML file, then the options given (None: not
    given). An old run's flat config resumes with the values of keys it predates (LEGACY_DEFAULTS)."""
    flat: dict[str, Any] = {}
    if saved is not None:
        if saved.get("kind", kind) != kind:
            raise UserError(f"--resume: that folder holds a {saved['kind']} run, not a {kind} run "
                            f"(resume it with distilgan {saved['kind'] if saved['kind'] != 'finetune' else 'prune/qat'})")
        old = flatten(saved, kind, legacy=True)
        flat.update({k: v for k, v in legacy_defaults(old).items() if k in key_fields(kind)})
        flat.update(old)
    flat.update(file_values or {})
    flat.update({k: v for k, v in cli.items() if v is not None})
    return build(kind, flat)


def legacy_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The values of keys a saved (flat) run predates, chosen so that it resumes with the maths it had."""
    return {key: value for key, value in LEGACY_DEFAULTS.items() if key not in flatten(saved, "distill")}


def legacy_notice(saved: Mapping[str, Any], kind: str = "distill") -> str | None:
    """One line naming the defaults an old run resumes with, or None for a current run."""
    implied = {k: v for k, v in legacy_defaults(saved).items() if k in key_fields(kind)}
    if not implied:
        return None
    keys = ", ".join(f"{key}={value}" for key, value in implied.items())
    return f"this run predates {', '.join(implied)}; resuming with what it did then: {keys}"


def validate(config: RunConfig) -> None:
    for section in SECTIONS:
        part = getattr(config, section)
        for f in fields(part):
            value, check, choices = getattr(part, f.name), f.metadata.get("check"), f.metadata.get("choices")
            if value is None:
                continue
            if check == "positive" and value <= 0:
                raise UserError(f"{f.name} must be > 0, got {value}")
            if check == "nonneg" and value < 0:
                raise UserError(f"{f.name} must be >= 0, got {value}")
            if check == "decay" and not 0.0 <= value < 1.0:
                raise UserError(f"{f.name} must be in [0, 1), got {value}")
            if choices and value not in choices:
                raise UserError(f"{f.name} '{value}' does not exist (choose from {', '.join(choices)})")
    if config.loop.metric_n < 2:
        raise UserError(f"metric_n must be >= 2, got {config.loop.metric_n}")
    from distilgan.train.loop_metrics import parse_metrics

    parse_metrics(config.loop.metrics, KINDS[config.kind].metrics)


def ema_beta(loop: LoopConfig, images_per_update: int, images_seen: int) -> float | None:
    """Decay of one EMA update: StyleGAN's ``0.5 ** (batch / ema_nimg)``, ema_nimg capped by the ramp-up;
    None when the run uses a fixed ``ema_decay`` instead."""
    if loop.ema_decay is not None or loop.ema_kimg is None:
        return None
    half_life = loop.ema_kimg * 1000.0
    if loop.ema_rampup is not None:
        half_life = min(half_life, images_seen * loop.ema_rampup)
    return 0.0 if half_life <= 0 else math.pow(0.5, images_per_update / half_life)


def config_to_dict(config: RunConfig | LoopConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: RunConfig, path: str | Path) -> None:
    yaml = need("yaml")

    from distilgan.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def check_resume_compatible(saved: Mapping[str, Any], current: RunConfig) -> None:
    """Raise naming the first key whose value differs from the run being resumed (free keys may)."""
    where = key_fields(current.kind)
    now = flatten(config_to_dict(current), current.kind)
    for key, old in flatten(saved, current.kind, legacy=True).items():
        if key not in now or (key in where and where[key][1].metadata.get("free")):
            continue
        if now[key] != old:
            raise UserError(f"--resume: '{key}' is {now[key]!r} but the run was started with {old!r} "
                            f"(drop the option or use a new --out)")


# ----------------------------------------------------------------------------- command-line options

_CHECK_TYPES = {("int", "positive"): argtypes.positive_int, ("int", "nonneg"): argtypes.nonneg_int,
                ("float", "positive"): argtypes.positive_float, ("float", "nonneg"): argtypes.nonneg_float,
                ("float", "decay"): argtypes.decay}


def _default_text(value: Any) -> str:
    return "none" if value is None else ("''" if value == "" else str(value).lower() if isinstance(value, bool) else str(value))


_TITLES = {"data": "data", "loop": "training loop", "model": "model", "objective": "objective"}


def add_config_options(parser: Any, kind: str, only: tuple[str, ...] | None = None, grouped: bool = True) -> None:
    """``--key-name`` for every key of ``kind`` (or just ``only``), typed and checked from the field, its
    help ending in the kind's default, in one help group per section (``grouped``); each defaults to
    None so "not given" is visible. ``parser``: an ArgumentParser or an argument group."""
    defaults = kind_defaults(kind)
    groups: dict[str, Any] = {}
    for key, (section, f) in key_fields(kind).items():
        if only is not None and key not in only:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(_TITLES[section]) if grouped else parser
        meta, flag, target = f.metadata, "--" + key.replace("_", "-"), groups[section]
        text = meta["help"]
        if "(default" not in text and defaults[key] != "":
            text += f" (default {_default_text(defaults[key])})"
        base = str(f.type).split(" ")[0].split("|")[0].strip()
        if base == "bool":
            target.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif meta.get("nargs"):
            target.add_argument(flag, dest=key, nargs=meta["nargs"], default=None, metavar="NAME", help=text)
        else:
            kind_type = meta.get("argtype") or _CHECK_TYPES.get((base, meta.get("check"))) or {
                "int": int, "float": float}.get(base, str)
            target.add_argument(flag, dest=key, type=kind_type, default=None, help=text)


def cli_values(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The options given on the command line, as flat keys (None: not given)."""
    values = {key: getattr(args, key, None) for key in key_fields(kind)}
    if isinstance(values.get("metrics"), (list, tuple)):
        values["metrics"] = ",".join(values["metrics"])
    return values
