"""``distilgan sample``: draw a distillation set from a teacher into a store folder."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from distilgan.errors import UserError
from distilgan.utils import argtypes
from distilgan.utils.latent import TRUNCATION_KINDS
from distilgan.utils.noise import Z_KIND_HELP

DESCRIPTION = """\
Sample PER_CLASS images of each class from a teacher and write them, with their z and labels,
as checksummed shards + manifest.json in OUT (format: docs/store.md). Same arguments give the
same bytes. A killed run resumes when rerun with the same arguments; a folder holding a set made
with other arguments is refused unless --overwrite.

examples:
  distilgan sample --teacher builtin:toy --out sets/toy --per-class 1000
  distilgan sample --teacher onnx:biggan.onnx --out sets/cifar --per-class 50000 --classes cat dog
  distilgan sample --teacher gen.pt --out sets/x --per-class 100 --output-range 0 1 --truncation 1.5
  distilgan sample --teacher onnx:biggan.onnx --out sets/t --per-class 100 --truncation 1 --truncation-kind scaled-truncnorm
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample a distillation set from a teacher",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_teacher_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the set (created)")
    parser.add_argument("--per-class", required=True, type=argtypes.positive_int, metavar="N", help="samples per class")
    parser.add_argument("--classes", nargs="+", metavar="C",
                        help="classes to sample, as indices (0 3) or names (cat dog); default all")
    add_teacher_run_arguments(parser, unit="samples")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a set made with other arguments in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def add_teacher_argument(parser: argparse.ArgumentParser) -> None:
    """``--teacher SPEC``: every spec ``load_teacher`` takes (shared by ``sample`` and ``pairs``)."""
    parser.add_argument("--teacher", required=True, metavar="SPEC",
                        help="teacher spec: onnx:PATH, torchscript:PATH, python:FILE.py:NAME, "
                             "stylegan2-ada:PKL, distilgan:DIR, builtin:NAME, or a path")


def add_teacher_run_arguments(parser: argparse.ArgumentParser, unit: str = "samples") -> None:
    """How a teacher is run into shards (seed, batch and shard sizes, device, truncation, output range,
    adapter options): one definition for every command that samples a teacher; ``unit`` names a shard's items."""
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of z (default 0)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=256, help="teacher batch size (default 256)")
    parser.add_argument("--shard-size", type=argtypes.positive_int, default=10000,
                        help=f"{unit} per shard file (default 10000)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--truncation", type=argtypes.positive_float, metavar="T",
                        help="truncation: StyleGAN psi for teachers that apply it, else the threshold t of z's "
                             "distribution (--truncation-kind); the student records it and samples with it")
    parser.add_argument("--truncation-kind", default="truncated", metavar="KIND",  # checked in run: one-line error
                        help="how --truncation shapes z: " + "; ".join(f"{k}: {Z_KIND_HELP[k]}" for k in TRUNCATION_KINDS)
                             + " (default truncated)")
    parser.add_argument("--output-range", type=argtypes.finite_float, nargs=2, metavar=("LOW", "HIGH"),
                        help="range of the teacher's raw output, mapped to [-1, 1] (default -1 1)")
    parser.add_argument("--teacher-option", action="append", default=[], metavar="KEY=VALUE",
                        help="adapter option, repeatable (e.g. z_input=noise, class_names=cat,dog)")


def parse_teacher_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; VALUE as JSON when it parses (numbers, true, lists), else text."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--teacher-option '{item}' is not KEY=VALUE (e.g. --teacher-option z_input=noise)")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    from distilgan.utils.paths import check_output_dir

    check_output_dir(args.out, "--out")  # an existing set folder is fine: write_store resumes or refuses it
    if args.per_class < 1:
        raise UserError(f"--per-class must be >= 1, got {args.per_class}")
    options = check_teacher_run_arguments(args)
    dist = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: the shards are split over the ranks
        from distilgan.train.distributed import setup_distributed

        dist = setup_distributed(args.device)
    try:
        return _sample(args, options, dist)
    finally:
        if dist is not None:
            from distilgan.train.distributed import teardown_distributed

            teardown_distributed()


def check_teacher_run_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Check the options of ``add_teacher_run_arguments`` (one line each); return the adapter options."""
    if args.truncation is not None and not args.truncation > 0:
        raise UserError(f"--truncation must be > 0, got {args.truncation:g}")
    if args.truncation_kind not in TRUNCATION_KINDS:
        raise UserError(f"unknown --truncation-kind '{args.truncation_kind}' (choose from {', '.join(TRUNCATION_KINDS)})")
    if args.truncation is None and args.truncation_kind != "truncated":
        raise UserError(f"--truncation-kind {args.truncation_kind} needs --truncation T (the threshold)")
    options = parse_teacher_options(args.teacher_option)
    for key in ("device", "output_range", "truncation"):
        if key in options:
            raise UserError(f"give {key} with --{key.replace('_', '-')}, not --teacher-option")
    return options


def load_teacher_from_args(args: argparse.Namespace, options: dict[str, Any], device: str | None = None) -> Any:
    """The teacher of ``--teacher`` with the checked options (``device`` overrides ``--device``)."""
    from distilgan.teachers import load_teacher

    return load_teacher(
        args.teacher,
        device=device or args.device,
        output_range=tuple(args.output_range) if args.output_range else None,
        truncation=args.truncation,
        **options,
    )


def _sample(args: argparse.Namespace, options: dict[str, Any], dist: Any) -> int:
    from distilgan.store import resolve_classes, write_store
    from distilgan.utils.noise import ZDistribution

    # each rank runs its teacher on its own GPU; the manifest records --device as given, as one process does
    device = str(dist.device) if dist is not None and dist.device.type == "cuda" else args.device
    teacher = load_teacher_from_args(args, options, device)
    classes = resolve_classes(args.classes, teacher.num_classes, teacher.class_names)  # fail before any work
    stats: dict[str, Any] = {}
    start = time.perf_counter()
    manifest = write_store(
        teacher,
        args.out,
        per_class=args.per_class,
        classes=classes,
        seed=args.seed,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        truncation=args.truncation,
        truncation_kind=args.truncation_kind,
        device=args.device,
        progress=not args.quiet,
        overwrite=args.overwrite,
        stats=stats,
        dist=dist,
    )
    seconds = time.perf_counter() - start
    if dist is not None and not dist.is_main:
        return 0
    res, ch = manifest["resolution"], manifest["channels"]
    resumed = f", {stats['resumed']} kept from an earlier run" if stats.get("resumed") else ""
    print(
        f"wrote {manifest['total']} samples ({len(manifest['classes'])} classes x {manifest['per_class']}, "
        f"{res}x{res}x{ch}, z_dim {manifest['z_dim']}, z {ZDistribution.from_dict(manifest['z_distribution']).describe()}) in {manifest['num_shards']} shards to {args.out}{resumed}; "
        f"sampled {stats.get('written', 0)} in {seconds:.1f} s ({stats.get('written', 0) / max(seconds, 1e-9):.0f}/s)"
    )
    return 0
