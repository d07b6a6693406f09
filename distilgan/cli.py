"""The ``distilgan`` command line: one subcommand per pipeline step.

Each subcommand lives in ``distilgan/commands/<name>.py`` and exposes
``add_parser(subparsers) -> None``, which registers its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit code. Heavy imports (torch, onnxruntime) happen
inside those callables so ``distilgan --help`` stays fast.

Errors the user can fix are raised as :class:`distilgan.errors.UserError` and printed here as one
line with exit code 2; usage errors (a bad number, an unknown option) are one line and exit code 2
too (:class:`OneLineParser`), and ``main`` returns that code rather than raising SystemExit. Nothing
else is caught, so real bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from typing import Any, NoReturn, Sequence

from distilgan import __version__
from distilgan.errors import UserError
from distilgan.utils.progress import add_quiet_option, set_quiet, warnings_as_notes
from distilgan.utils.argtypes import GIVEN_ATTR

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
    "pairs",
    "distill_i2i",
    "translate",
    "train_encoder",
    "invert",
)

# Commands that finish in seconds and show no progress: no --quiet.
NOT_LONG = {"info", "serve"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors in one line (not 5-9 lines of usage), and a record of given options.

    ``error`` prints ``distilgan: error: MESSAGE (see `distilgan CMD --help`)`` and exits 2, like a
    UserError. Each parse also stores the dests the user actually typed in ``args._distilgan_given``,
    so a command can refuse an option that does not apply to its mode (utils/argtypes.refuse_unless)
    even when the value given equals the default.
    """

    def error(self, message: str) -> NoReturn:
        # "argument --seed: must be ..." reads better as "--seed must be ...", like the UserErrors
        named = re.match(r"argument ([^:]+): (must .*)$", message)
        if named:
            message = f"{named.group(1)} {named.group(2)}"
        self.exit(2, f"distilgan: error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        self._distilgan_given: set[str] = set()
        namespace, extras = super().parse_known_args(args, namespace)
        # a subcommand's parser ran inside this one and left its own set on the namespace: merge
        setattr(namespace, GIVEN_ATTR, frozenset(getattr(namespace, GIVEN_ATTR, ())) | self._distilgan_given)
        return namespace, extras

    def _get_values(self, action: argparse.Action, arg_strings: Any) -> Any:
        # argparse calls this with the list of strings typed for every option present on the command
        # line, and with a plain string only to convert a default: the list marks "given".
        if action.option_strings and isinstance(arg_strings, list):
            self._distilgan_given.add(action.dest)
        return super()._get_values(action, arg_strings)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="distilgan",
        description="Distil a big class-conditional generator into a tiny, fast one.",
    )
    parser.add_argument("--version", action="version", version=f"distilgan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    parser.commands = subparsers.choices  # type: ignore[attr-defined]  # name -> parser, for main's errors
    for name in COMMANDS:
        module_name = f"distilgan.commands.{name}"
        if importlib.util.find_spec(module_name) is None:  # a broken install, never a feature switch
            raise RuntimeError(f"distilgan is incomplete: its command module {module_name} is missing (reinstall distilgan)")
        importlib.import_module(module_name).add_parser(subparsers)
    for name, command in subparsers.choices.items():
        if name not in NOT_LONG:
            add_quiet_option(command)  # one --quiet for every long command, handled in main
    return parser


TORCH_FLOOR = (2, 5)  # the ONNX export passes dynamo=False, which torch.onnx.export takes from 2.5


def torch_too_old() -> str | None:
    """The one-line complaint when the installed torch is below the floor (read from the package
    metadata, so that `distilgan --help` does not pay for importing torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("torch")
    except PackageNotFoundError:
        return "PyTorch is not installed: pip install torch (see the README for the CPU wheel)"
    parts = []
    for piece in found.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    if tuple(parts) < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        return f"distilgan needs torch >= {floor}, found {found}: pip install 'torch>={floor}'"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    problem = torch_too_old()
    if problem:
        print(f"distilgan: error: {problem}", file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:  # name the subcommand's --help, not the top-level one
            command = getattr(args, "command", None)
            parser_for = getattr(parser, "commands", {}).get(command, parser)
            parser_for.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as done:  # a usage error (2, its line printed), --help or --version (0)
        return done.code if isinstance(done.code, int) else 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    set_quiet(bool(getattr(args, "quiet", False)))  # every progress bar of the run obeys it
    try:
        with warnings_as_notes():  # our own warnings: one `distilgan: note:` line each
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
