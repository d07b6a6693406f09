"""The fine-tuning options `distilgan prune` and `distilgan qat` share: which loss (``--run``,
``--feature-weight``), the fine-tuning run folder (``--finetune-out``, ``--resume``) and the
training loop options fine-tuning takes (train/run_options.py FINETUNE_OPTION_KEYS, made by train/config.py)."""

from __future__ import annotations

import argparse
from typing import Any

from distilgan.errors import UserError
from distilgan.utils import argtypes


def add_finetune_options(parser: argparse.ArgumentParser, steps: int, lr: float, steps_meaning: str) -> None:
    """The options of a fine-tuning command (prune, qat) but its own; ``steps``, ``lr``: its defaults."""
    parser.add_argument("--checkpoint", required=True, help="generator checkpoint folder or built-in name")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=argtypes.nonneg_int, default=steps, help=f"{steps_meaning} (default {steps})")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=argtypes.positive_float, default=lr, help=f"Adam learning rate (default {lr:g})")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the training z (default 0)")
    parser.add_argument("--format", default="openvino", help="export format: openvino (default) or onnx")
    parser.add_argument("--calibration-size", type=argtypes.positive_int, default=512,
                        help="INT8 calibration samples (default 512)")
    parser.add_argument("--threads", type=argtypes.positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    group = parser.add_argument_group("fine-tuning (the training loop)")
    group.add_argument("--run", help="the distill run folder that made the student: the trained discriminator in "
                       "RUN/state/state.pt adds its feature L1 to the pixel L1 (default: no discriminator)")
    group.add_argument("--feature-weight", type=argtypes.nonneg_float, default=None,
                       help="weight of the feature L1: the --run discriminator's (default 1) or, without --run, a "
                            "fixed random conv net's (default 0: pixel L1 only)")
    group.add_argument("--finetune-out", help="fine-tuning run folder: config.yaml, log.jsonl, tb/, grids/, "
                       "checkpoints/, state/state.pt (default: none written)")
    group.add_argument("--resume", action="store_true", help="continue the run in --finetune-out exactly where its "
                       "state stops (a larger --steps extends it)")
    group.add_argument("--ema", action=argparse.BooleanOptionalAction, default=False,
                       help="ship the EMA copy of the fine-tuned weights (default off)")
    from distilgan.train.config import add_config_options
    from distilgan.train.run_options import FINETUNE_OPTION_KEYS

    add_config_options(group, "finetune", only=FINETUNE_OPTION_KEYS, grouped=False)


def prepare_finetune_command(args: argparse.Namespace) -> tuple[str, Any]:
    """Checks before the long fine-tuning, then (export format, the loaded generator)."""
    import torch

    from distilgan.deploy import FORMATS, check_choice
    from distilgan.deploy.export import load_generator
    from distilgan.utils.paths import check_output_dir

    fmt = check_choice(args.format, FORMATS, "--format")
    check_output_dir(args.out, "--out")
    if args.finetune_out:
        check_output_dir(args.finetune_out, "--finetune-out")  # an existing run folder is fine: --resume continues it
    for option in ("--metric-n", "--metric-every", "--metric-ref", "--metric-classifier"):
        argtypes.refuse_unless(args, option, bool(args.metrics), "sets up the in-loop metrics, and no --metrics are asked for")
    if args.threads:
        torch.set_num_threads(args.threads)
    return fmt, load_generator(args.checkpoint)


def finetune_arguments(args: argparse.Namespace, model: Any, command: str) -> dict[str, Any]:
    """Keyword arguments of prune_and_distil / quantization_aware_training; prints which loss is used."""
    from distilgan.train.finetune_objective import describe_loss, discriminator_from_run, feature_choice, run_metric_reference

    from distilgan.train.config import cli_values
    from distilgan.train.run_options import FINETUNE_OPTION_KEYS

    options = {key: value for key, value in cli_values(args, "finetune").items()
               if key in FINETUNE_OPTION_KEYS and value is not None}
    if args.resume and not args.finetune_out:
        raise UserError("--resume continues a fine-tuning run (add --finetune-out DIR)")
    if options.get("metrics") and not args.finetune_out:
        raise UserError("--metrics are written into the fine-tuning run folder (add --finetune-out DIR)")
    discriminator = discriminator_from_run(args.run, model) if args.run else None
    if options.get("metrics") and "metric_ref" not in options:
        reference = run_metric_reference(args.run) if args.run else None
        if reference is None:
            raise UserError("--metrics need a reference (add --metric-ref STATS.npz|STORE|DATASET, or --run RUN to use "
                            "that run's data)")
        options["metric_ref"] = reference
    kind, weight = feature_choice(discriminator is not None, True, args.feature_weight)
    print(f"{command}: fine-tuning loss: {describe_loss(kind, weight)}"
          + (f"; run folder {args.finetune_out}" if args.finetune_out else ""))
    finetune = {"run_dir": args.finetune_out, "resume": args.resume, "ema": bool(args.ema), "options": options}
    return {"feature_weight": args.feature_weight, "discriminator": discriminator, "finetune": finetune}
