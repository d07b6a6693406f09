"""``distilgan qat``: quantisation-aware fine-tuning against the FP32 student, then an INT8 export."""

from __future__ import annotations

import argparse

from distilgan.deploy.finetune_cli import add_finetune_options
from distilgan.utils import argtypes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "qat",
        help="quantisation-aware training, then export INT8",
        description=(
            "Fine-tune a student under INT8 fake quantisation (OpenVINO's scheme: per-channel symmetric "
            "weights, per-tensor activations, straight-through rounding) while distilling from the FP32 "
            "student itself through the training loop (pixel L1, plus the feature L1 of the distill run's discriminator "
            "with --run, or an optional random-conv feature L1; no dataset needed). Writes OUT/generator (a normal "
            "checkpoint), OUT/<format>-int8 (the INT8 export) and OUT/qat.json; --finetune-out keeps the loop's run "
            "folder (logs, grids, state for an exact --resume)."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="FP32 generator checkpoint folder or built-in name")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=argtypes.nonneg_int, default=1000, help="fine-tuning steps (default 1000)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=argtypes.positive_float, default=2e-5, help="Adam learning rate (default 2e-5)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the training z (default 0)")
    parser.add_argument("--format", default="openvino", help="export format: openvino (default) or onnx")
    parser.add_argument("--calibration-size", type=argtypes.positive_int, default=512, help="calibration samples (default 512)")
    parser.add_argument("--int8", choices=("nncf", "qat"), default="nncf",
                        help="INT8 scales of the export: NNCF post-training quantisation of the fine-tuned weights "
                             "(nncf, default: better on the students measured so far, docs/deploy.md) or exactly the "
                             "scales trained with (qat: QuantizeLinear/DequantizeLinear -> FakeQuantize)")
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
    from distilgan.deploy.qat import quantization_aware_training
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
    tuned, report, fake_quantised = quantization_aware_training(
        model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        calibration_size=args.calibration_size, **finetune_arguments(args, model, "qat"),
    )
    print(f"qat: L1 to FP32 under fake INT8 {report['l1_fake_int8_before']:.4g} -> {report['l1_fake_int8_after']:.4g}")
    report["int8_scales"] = args.int8
    finish_training_command(model, tuned, args.checkpoint, Path(args.out), fmt, "qat", report, args.calibration_size,
                            quantized=fake_quantised if args.int8 == "qat" else None)
    return 0
