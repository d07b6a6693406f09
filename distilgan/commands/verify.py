"""``distilgan verify``: re-check a distillation set's (or an edit pair set's) checksums, arrays and counts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from distilgan.errors import UserError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a distillation set or a pair set (checksums, counts)",
        description="Re-hash every shard of a set made by `distilgan sample` (or a pair set made by "
        "`distilgan pairs`, recognised by its manifest), check its arrays, labels and counts against "
        "manifest.json. Prints OK with totals (exit 0) or one line per problem, naming "
        "each bad shard (exit 1). Exit 2 when DIR is not a set at all.",
    )
    parser.add_argument("dir", metavar="DIR", help="folder written by distilgan sample or distilgan pairs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distilgan.store import MANIFEST, PAIRS_FORMAT, load_manifest, verify_store

    root = Path(args.dir)
    if not root.exists():
        raise UserError(f"folder not found: {args.dir} (give the --out folder of distilgan sample)")
    if not root.is_dir():
        raise UserError(f"{args.dir} is not a folder (give the --out folder of distilgan sample)")
    if not (root / MANIFEST).exists():
        raise UserError(f"no {MANIFEST} in {args.dir}: not a distillation set (make one with distilgan sample)")
    if _manifest_format(root) == PAIRS_FORMAT:
        return _verify_pairs(args, root)
    if _report(args.dir, verify_store(root, progress=not args.quiet)):
        return 1
    manifest = load_manifest(root)
    res, ch = manifest["resolution"], manifest["channels"]
    print(
        f"OK {args.dir}: {manifest['total']} samples, {manifest['num_shards']} shards, "
        f"{len(manifest['classes'])} classes x {manifest['per_class']}, {res}x{res}x{ch}, z_dim {manifest['z_dim']}"
    )
    return 0


def _manifest_format(root: Path) -> str | None:
    """The manifest's ``format`` (None when unreadable: the store's verify reports that in its words)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest.get("format") if isinstance(manifest, dict) else None


def _report(folder: str, problems: list[str]) -> bool:
    """Print one BAD line per problem (and a count on stderr); True when there were any."""
    for problem in problems:
        print(f"BAD {problem}")
    if problems:
        print(f"{folder}: {len(problems)} problem(s)", file=sys.stderr)
    return bool(problems)


def _verify_pairs(args: argparse.Namespace, root: Path) -> int:
    from distilgan.commands.pairs import kept_line
    from distilgan.store.pairs import load_pairs_manifest, verify_pairs

    if _report(args.dir, verify_pairs(root, progress=not args.quiet)):
        return 1
    manifest = load_pairs_manifest(root)
    res, ch = manifest["resolution"], manifest["channels"]
    print(f"OK {args.dir}: {manifest['total']:,} pairs, {manifest['num_shards']} shards, {len(manifest['edits'])} edits "
          f"x {manifest['per_edit']:,}, {res}x{res}x{ch}, z_dim {manifest['z_dim']}; {kept_line(manifest)}")
    return 0
