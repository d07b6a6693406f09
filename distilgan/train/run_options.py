"""Options every training command shares (distill, train-teacher, fine-tuning): precision and layout,
the EMA copy's BatchNorm statistics, and the metrics inside the loop. One table, so the commands'
``--help`` and the config keys cannot drift apart."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import numpy as np

# (option, config key, type, help); every one defaults to None so "not given" is visible.
SHARED_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--precision", "precision", str,
     "auto, fp32 or bf16 autocast (default auto: bf16 on a CPU with AMX or AVX-512 BF16 when a short probe "
     "at start shows it faster, and on CUDA GPUs with bf16; losses, EMA and optimiser states stay fp32)"),
    ("--ema-buffers", "ema_buffers", str,
     "BatchNorm statistics of the EMA copy: recompute (default: averaged like the weights, and re-estimated "
     "on its own outputs at every save), average, or copy (the raw G's, as before)"),
    ("--ckpt-every-minutes", "ckpt_every_minutes", float,
     "also save checkpoint + training state every this many minutes of wall time (default 10; 0: off)"),
    ("--max-minutes", "max_minutes", float,
     "wall-time budget of this invocation in minutes: at the first step past it the run saves its checkpoint, "
     "grid and metrics as at its last step and ends (exit 0); --resume continues it (default: none)"),
    ("--ckpt-keep", "ckpt_keep", int, "keep only the newest N step checkpoints in RUN/checkpoints (default: all)"),
    ("--metric-n", "metric_n", int, "samples per in-loop evaluation, and reference images (default 1000)"),
    ("--metric-every", "metric_every", int, "evaluate every this many steps (default: at every checkpoint)"),
    ("--metric-ref", "metric_ref", str,
     "reference of the in-loop metrics: a `distilgan stats` .npz, a store folder or a dataset "
     "(default: the run's real data, else its distillation set)"),
    ("--metric-classifier", "metric_classifier", str,
     "judge of the in-loop 'ca' (class agreement) metric: cifar10-resnet56 (default), a CIFAR ResNet .th file "
     "or a classifier folder"),
]


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    for flag, key, kind, text in SHARED_OPTIONS:
        parser.add_argument(flag, dest=key, type=kind, default=None, help=text)
    parser.add_argument("--metrics", dest="metrics", nargs="+", default=None, metavar="NAME",
                        help="metrics inside the loop: kid, fid, ca (the first chooses RUN/best/; default: none)")
    parser.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC activations (default: each network's preference: on for BigGAN, off for DiStyleGAN, "
                        "whose BatchNorm backward is slower in NHWC on CPU)")


def shared_cli_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {key: getattr(args, key, None) for _, key, _, _ in SHARED_OPTIONS}
    metrics = getattr(args, "metrics", None)
    values["metrics"] = None if metrics is None else ",".join(metrics)
    values["channels_last"] = getattr(args, "channels_last", None)
    return values


def build_loop_metrics(config: Any, run_dir: Path, default_ref: str, z_sampler: Callable[[np.random.Generator, int], np.ndarray],
                       classes: list[int], device: Any) -> Any:
    """The run's LoopMetrics, or None when no metric is asked for."""
    from distilgan.train.loop_metrics import LoopMetrics, parse_metrics, reference_loader

    from distilgan.errors import UserError

    names = parse_metrics(config.metrics)
    if not names:
        return None
    judge = getattr(config, "metric_classifier", None)
    if judge and "ca" not in names:
        raise UserError("--metric-classifier judges the in-loop 'ca' metric; add ca to --metrics or leave it out")
    spec = config.metric_ref or default_ref
    return LoopMetrics(names, config.metric_n, run_dir, reference_loader(spec, config.metric_n, seed=config.seed),
                       z_sampler, classes, config.seed, device, judge=judge)
