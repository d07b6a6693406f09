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
    parser.add_argument("--macs-ratio", type=argtypes.fraction, default=0.5, help="target MACs / original MACs (default 0.5)")
    add_finetune_options(parser, steps=2000, lr=2e-4, steps_meaning="distillation steps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from distilgan.deploy.commands_common import finish_training_command
    from distilgan.deploy.finetune_cli import finetune_arguments, prepare_finetune_command
    from distilgan.deploy.prune import prune_and_distil

    fmt, model = prepare_finetune_command(args)
    pruned, report = prune_and_distil(model, args.macs_ratio, steps=args.steps, batch_size=args.batch_size,
                                      lr=args.lr, seed=args.seed, **finetune_arguments(args, model, "prune"))
    print(f"prune: widths {report['widths_before']} -> {report['widths_after']}, MACs {report['macs_before']:,} -> "
          f"{report['macs_after']:,} ({report['macs_ratio']:.1%}); L1 to unpruned {report['l1_to_unpruned_after_prune']:.4g} "
          f"-> {report['l1_to_unpruned_final']:.4g}")
    finish_training_command(model, pruned, args.checkpoint, Path(args.out), fmt, "prune", report, args.calibration_size)
    return 0
