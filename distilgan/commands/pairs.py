"""``distilgan pairs``: sample a teacher into an edit pair set for image-to-image distillation (issue 18).

For each edit SOURCE:TARGET and each z, the teacher draws G(z, SOURCE) and G(z, TARGET); a classifier
(the filter) scores both, and the manifest records which pairs it keeps. Format: docs/store.md, "Pair sets".
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from distilgan.commands.sample import (add_teacher_argument, add_teacher_run_arguments, check_teacher_run_arguments,
                                       load_teacher_from_args)
from distilgan.errors import UserError
from distilgan.utils import argtypes

# kept in step with distilgan.store.pairs_writer.DEFAULT_FILTER (not imported: add_parser stays light)
DEFAULT_FILTER = "cifar10-vgg11_bn_x0_25"

HELP = "sample source/target image pairs (one z, two classes) for image-to-image distillation"
DESCRIPTION = f"""\
Sample PER_EDIT pairs of each edit SOURCE:TARGET from a teacher: for one z, the image of the source
class and the image of the target class, G(z, source) and G(z, target), with z, the edit, both labels
and the filter's scores, as checksummed shards + manifest.json in OUT (format: docs/store.md, "Pair
sets"). Pair i has edit i mod the number of edits. Same arguments give the same bytes; a killed run
resumes when rerun with the same arguments; a folder holding a set made with other arguments is
refused unless --overwrite.

The filter classifier (default {DEFAULT_FILTER}, the most accurate shipped one) scores the source
class on the source image and the target class on the target image; a pair is kept when both are
>= --min-confidence. Every pair is stored and the manifest marks the kept ones, so a student can be
trained with and without the filter from one set. The default filter is deliberately not the
ResNet-56 that judges the evaluation (flip rate): filter and judge stay independent.

examples:
  distilgan pairs --teacher builtin:toy --edit automobile:truck --edit horse:deer --per-edit 1000 --out pairs/toy
  distilgan pairs --teacher onnx:biggan.onnx --edit 1:9 --per-edit 5000 --out pairs/a2t --truncation 1
  distilgan pairs --teacher gen.pt --edit cat:dog --per-edit 100 --out pairs/x --no-filter
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("pairs", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_teacher_argument(parser)
    parser.add_argument("--edit", action="append", required=True, metavar="SOURCE:TARGET",
                        help="an edit, as class names (automobile:truck, any case) or indices (1:9); repeatable")
    parser.add_argument("--per-edit", required=True, type=argtypes.positive_int, metavar="N", help="pairs per edit")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the pair set (created)")
    add_teacher_run_arguments(parser, unit="pairs")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--filter-model", default=DEFAULT_FILTER, metavar="SPEC",
                       help=f"classifier scoring the pairs: a shipped name, a classifier folder or a CIFAR ResNet "
                            f".th file (default {DEFAULT_FILTER}; not the evaluation's judge, so the two are independent)")
    which.add_argument("--no-filter", action="store_true", help="no classifier: scores are NaN, every pair is kept")
    parser.add_argument("--min-confidence", type=argtypes.nonneg_float, default=0.5, metavar="P",
                        help="a pair is kept when the filter gives both its images their class with "
                             "probability >= P (default 0.5)")
    parser.add_argument("--overwrite", action="store_true", help="replace a set made with other arguments in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distilgan.store.pairs import parse_edits, write_pairs
    from distilgan.utils.paths import check_output_dir

    check_output_dir(args.out, "--out")  # an existing pair set folder is fine: write_pairs resumes or refuses it
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each rank would race for the one folder lock
        raise UserError("distilgan pairs runs in one process (start it without torchrun)")
    argtypes.refuse_unless(args, "--min-confidence", not args.no_filter, "applies only with a filter (drop --no-filter)")
    options = check_teacher_run_arguments(args)
    teacher = load_teacher_from_args(args, options)
    edits = parse_edits(args.edit, teacher.class_names, teacher.num_classes)  # fail before any work
    stats: dict[str, Any] = {}
    start = time.perf_counter()
    manifest = write_pairs(
        teacher, args.out, edits, per_edit=args.per_edit, seed=args.seed, shard_size=args.shard_size,
        batch_size=args.batch_size, truncation=args.truncation, truncation_kind=args.truncation_kind,
        device=args.device, filter_model=None if args.no_filter else args.filter_model,
        min_confidence=args.min_confidence, progress=not args.quiet, overwrite=args.overwrite, stats=stats,
    )
    seconds = time.perf_counter() - start
    res, ch = manifest["resolution"], manifest["channels"]
    resumed = f", {stats['resumed']:,} kept from an earlier run" if stats.get("resumed") else ""
    print(f"wrote {manifest['total']:,} pairs ({len(manifest['edits'])} edits x {manifest['per_edit']:,}, "
          f"{res}x{res}x{ch}) in {manifest['num_shards']} shards to {args.out}{resumed}; sampled "
          f"{stats.get('written', 0):,} in {seconds:.1f} s; {kept_line(manifest)}")
    return 0


def kept_line(manifest: dict[str, Any]) -> str:
    """'kept 4,312 of 5,000 pairs (86.2 %): automobile:truck 90.1 %, ... by CLASSIFIER at >= 0.5'."""
    summary = manifest["filter"]
    if summary["classifier"] is None:
        return f"no filter (--no-filter): all {summary['total']:,} pairs kept"
    per_edit = ", ".join(f"{name} {100 * s['fraction']:.1f} %" for name, s in summary["kept_per_edit"].items())
    return (f"kept {summary['kept']:,} of {summary['total']:,} pairs ({100 * summary['kept_fraction']:.1f} %): "
            f"{per_edit}; filter {summary['classifier']}, min confidence {summary['min_confidence']:g}")
