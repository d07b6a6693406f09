"""What every training command shares beyond its config keys: resolving a run (new or resumed)
and the loop's metrics, each written once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The loop keys fine-tuning (prune, qat) takes as options; the rest of its loop is fixed by the task.
FINETUNE_OPTION_KEYS = ("precision", "ema_buffers", "ckpt_every_minutes", "max_minutes", "ckpt_keep", "metrics",
                        "metric_n", "metric_every", "metric_ref", "metric_classifier", "channels_last", "log_every",
                        "ckpt_every_steps")


def build_loop_metrics(loop: Any, run_dir: Path, default_ref: str, z_sampler: Callable[[np.random.Generator, int], np.ndarray],
                       classes: list[int], device: Any) -> Any:
    """The run's LoopMetrics (``loop``: its LoopConfig), or None when no metric is asked for."""
    from distilgan.errors import UserError
    from distilgan.train.loop_metrics import LoopMetrics, parse_metrics, reference_loader

    names = parse_metrics(loop.metrics)
    if not names:
        return None
    judge = loop.metric_classifier
    if judge and "ca" not in names:
        raise UserError("--metric-classifier judges the in-loop 'ca' metric; add ca to --metrics or leave it out")
    spec = loop.metric_ref or default_ref
    return LoopMetrics(names, loop.metric_n, run_dir, reference_loader(spec, loop.metric_n, seed=loop.seed),
                       z_sampler, classes, loop.seed, device, judge=judge)


def resolve_command_run(args: argparse.Namespace, kind: str) -> tuple[Any, Path, dict[str, Any] | None]:
    """(RunConfig, run folder, saved state or None) of a training command: options > --config file >
    the run being resumed (``--resume``) > defaults; a recipe that differs from the resumed run's, a
    run folder already holding a run without ``--resume``, or metric options without ``--metrics`` are
    one-line errors."""
    from distilgan.errors import UserError
    from distilgan.train.config import check_resume_compatible, cli_values, legacy_notice, load_yaml, resolve_run_config
    from distilgan.train.state import load_state
    from distilgan.train.training_loop import STATE_PATH
    from distilgan.utils import argtypes
    from distilgan.utils.paths import check_output_dir

    cli = cli_values(args, kind)
    file_values = load_yaml(args.config, kind) if getattr(args, "config", None) else {}
    out = cli.get("out") or file_values.get("out")
    if not out:
        raise UserError("no run folder given (add --out RUN)")
    run_dir = Path(out)
    check_output_dir(run_dir, "--out")  # an existing run folder is fine: --resume continues it
    state = None
    if args.resume:
        state = load_state(run_dir / STATE_PATH)
        config = resolve_run_config(kind, cli, file_values, saved=state["config"])
        check_resume_compatible(state["config"], config)
        notice = legacy_notice(state["config"], kind)
        if notice:
            print(f"{kind}: {notice}")
    else:
        if (run_dir / STATE_PATH).exists():
            raise UserError(f"{run_dir} already holds a training run (add --resume to continue it, or pick another --out)")
        config = resolve_run_config(kind, cli, file_values)
    for option in ("--metric-n", "--metric-every", "--metric-ref", "--metric-classifier"):
        argtypes.refuse_unless(args, option, bool(config.loop.metrics),
                               "sets up the in-loop metrics, and no --metrics are asked for")
    return config, run_dir, state


def train_to_the_end(trainer: Any, resumed: bool, run_dir: Path, kind: str) -> None:
    """Fit the run (unless it has already done its steps) and say where its generator is."""
    main = trainer.dist.is_main
    if trainer.step >= trainer.total_steps:
        if main:
            print(f"{kind}: {run_dir} has already finished its {trainer.total_steps} steps")
        return
    result = trainer.fit(resumed=resumed)
    if main:
        print(f"{kind}: done at step {result['step']} (epoch {result['epoch']}); generator in {run_dir / 'generator'}")
        if "best" in result:
            print(f"{kind}: {result['best']['summary']}")


def check_same_data(config: Any, state: dict[str, Any] | None, manifest: dict[str, Any], flag: str = "--data") -> None:
    """Record the identity of the run's set (its shards' sha256) in ``config.extra``; on ``--resume``, refuse
    another set, or one remade at the same path: a different set would move the held-out split and the
    epochs under the run."""
    import hashlib
    import json

    from distilgan.errors import UserError

    shards = [entry.get("sha256") for entry in manifest.get("shards", [])]
    fingerprint = hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]
    started_on = ((state or {}).get("config", {}).get("extra") or {}).get("data_fingerprint")
    if started_on is not None and started_on != fingerprint:
        raise UserError(f"--resume: {flag} {config.data.data} is not the set this run started on (its shards differ); "
                        "resume with that set, or start a new --out")
    config.extra["data_fingerprint"] = fingerprint

