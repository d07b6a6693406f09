"""``distilgan verify``: re-check a distillation set's checksums, arrays and counts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from distilgan.errors import UserError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a distillation set (checksums, counts)",
        description="Re-hash every shard of a set made by `distilgan sample`, check its arrays, labels and "
        "counts against manifest.json. Prints OK with totals (exit 0) or one line per problem, naming "
        "each bad shard (exit 1). Exit 2 when DIR is not a set at all.",
    )
    parser.add_argument("dir", metavar="DIR", help="folder written by distilgan sample")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distilgan.store import MANIFEST, load_manifest, verify_store

    root = Path(args.dir)
    if not root.exists():
        raise UserError(f"folder not found: {args.dir} (give the --out folder of distilgan sample)")
    if not root.is_dir():
        raise UserError(f"{args.dir} is not a folder (give the --out folder of distilgan sample)")
    if not (root / MANIFEST).exists():
        raise UserError(f"no {MANIFEST} in {args.dir}: not a distillation set (make one with distilgan sample)")
    problems = verify_store(root, progress=not args.quiet)
    if problems:
        for problem in problems:
            print(f"BAD {problem}")
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    manifest = load_manifest(root)
    res, ch = manifest["resolution"], manifest["channels"]
    print(
        f"OK {args.dir}: {manifest['total']} samples, {manifest['num_shards']} shards, "
        f"{len(manifest['classes'])} classes x {manifest['per_class']}, {res}x{res}x{ch}, z_dim {manifest['z_dim']}"
    )
    return 0
