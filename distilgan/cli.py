"""The ``distilgan`` command line: one subcommand per pipeline step.

Each subcommand lives in ``distilgan/commands/<name>.py`` and exposes
``add_parser(subparsers) -> None``, which registers its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit code. Heavy imports (torch, onnxruntime) happen
inside those callables so ``distilgan --help`` stays fast.

Errors the user can fix are raised as :class:`distilgan.errors.UserError` and printed here as one
line with exit code 2; nothing else is caught, so real bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Sequence

from distilgan import __version__
from distilgan.errors import UserError

# Pipeline order: teacher -> store -> trainer -> checkpoint -> evaluation -> deployment.
COMMANDS = (
    "demo",
    "sample",
    "verify",
    "info",
    "distill",
    "generate",
    "gif",
    "stats",
    "eval",
    "tsne",
    "serve",
    "export",
    "qat",
    "prune",
    "bench",
    "train_classifier",
    "calibrate",
    "train_teacher",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilgan",
        description="Distil a big class-conditional generator into a tiny, fast one.",
    )
    parser.add_argument("--version", action="version", version=f"distilgan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"distilgan.commands.{name}"
        if importlib.util.find_spec(module_name) is None:  # command not built yet
            continue
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"distilgan: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # `distilgan info CKPT | head`: the reader went away; not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("distilgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
