"""``distilgan qat``: quantisation-aware fine-tuning against the FP32 student, then an INT8 export."""

from __future__ import annotations

import argparse

from distilgan.deploy.finetune_cli import add_finetune_options


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
    parser.add_argument("--int8", choices=("nncf", "qat"), default="nncf",
                        help="INT8 scales of the export: NNCF post-training quantisation of the fine-tuned weights "
                             "(nncf, default: better on the students measured so far, docs/deploy.md) or exactly the "
                             "scales trained with (qat: QuantizeLinear/DequantizeLinear -> FakeQuantize)")
    add_finetune_options(parser, steps=1000, lr=2e-5, steps_meaning="fine-tuning steps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from distilgan.deploy.commands_common import finish_training_command
    from distilgan.deploy.finetune_cli import finetune_arguments, prepare_finetune_command
    from distilgan.deploy.qat import quantization_aware_training

    fmt, model = prepare_finetune_command(args)
    tuned, report, fake_quantised = quantization_aware_training(
        model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        calibration_size=args.calibration_size, **finetune_arguments(args, model, "qat"),
    )
    print(f"qat: L1 to FP32 under fake INT8 {report['l1_fake_int8_before']:.4g} -> {report['l1_fake_int8_after']:.4g}")
    report["int8_scales"] = args.int8
    finish_training_command(model, tuned, args.checkpoint, Path(args.out), fmt, "qat", report, args.calibration_size,
                            quantized=fake_quantised if args.int8 == "qat" else None)
    return 0
