"""``distilgan prune``: structured channel pruning to a MAC budget, distilled back, saved and exported."""

from __future__ import annotations

import argparse

from distilgan.deploy.finetune_cli import add_finetune_options
from distilgan.utils import argtypes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="prune channels to a MAC budget and distil back",
        description=(
            "Remove whole channels of a DiStyleGAN student (L1 norm of the filters, BN-scaled; GLU value/gate "
            "pairs together) until its MACs are at most --macs-ratio of the original, re-estimate batch-norm "
            "statistics, distil from the unpruned student through the training loop (pixel L1, plus the feature L1 "
            "of the distill run's discriminator with --run), and write OUT/generator (a normal checkpoint with "
            "per-layer widths), OUT/<format>-int8 and OUT/prune.json; --finetune-out keeps the loop's run folder "
            "(logs, grids, state for an exact --resume)."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="generator checkpoint folder or built-in name")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--macs-ratio", type=argtypes.fraction, default=0.5, help="target MACs / original MACs (default 0.5)")
    parser.add_argument("--steps", type=argtypes.nonneg_int, default=2000, help="distillation steps (default 2000)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=argtypes.positive_float, default=2e-4, help="Adam learning rate (default 2e-4)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the training z (default 0)")
    parser.add_argument("--format", default="openvino", help="export format: openvino (default) or onnx")
    parser.add_argument("--calibration-size", type=argtypes.positive_int, default=512, help="int8 calibration samples (default 512)")
    parser.add_argument("--threads", type=argtypes.positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    add_finetune_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from distilgan.deploy import FORMATS, check_choice
    from distilgan.deploy.commands_common import finish_training_command
    from distilgan.deploy.export import load_generator
    from distilgan.deploy.finetune_cli import finetune_arguments
    from distilgan.deploy.prune import prune_and_distil
    from distilgan.errors import UserError

    from distilgan.utils.paths import check_output_dir

    fmt = check_choice(args.format, FORMATS, "--format")
    check_output_dir(args.out, "--out")  # before the long fine-tuning
    if args.finetune_out:
        check_output_dir(args.finetune_out, "--finetune-out")  # an existing run folder is fine: --resume continues it
    for option in ("--metric-n", "--metric-every", "--metric-ref", "--metric-classifier"):
        argtypes.refuse_unless(args, option, bool(args.metrics), "sets up the in-loop metrics, and no --metrics are asked for")
    if args.steps < 0 or args.batch_size < 1:
        raise UserError("--steps must be >= 0 and --batch-size >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_generator(args.checkpoint)
    pruned, report = prune_and_distil(model, args.macs_ratio, steps=args.steps, batch_size=args.batch_size,
                                      lr=args.lr, seed=args.seed, **finetune_arguments(args, model, "prune"))
    print(f"prune: widths {report['widths_before']} -> {report['widths_after']}, MACs {report['macs_before']:,} -> "
          f"{report['macs_after']:,} ({report['macs_ratio']:.1%}); L1 to unpruned {report['l1_to_unpruned_after_prune']:.4g} "
          f"-> {report['l1_to_unpruned_final']:.4g}")
    finish_training_command(model, pruned, args.checkpoint, Path(args.out), fmt, "prune", report, args.calibration_size)
    return 0
