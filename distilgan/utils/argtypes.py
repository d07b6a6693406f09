"""argparse ``type=`` callables that check a number's meaning, and the "does this option apply" check.

A seed of -1 or a batch size of 0 is refused while the command line is parsed, in one line, instead of
as a ValueError traceback (or after reading 50,000 images). Each callable returns the parsed value;
argparse turns its ArgumentTypeError into ``argument --seed: must be ...``, which cli.py prints as one
line, ``distilgan: error: --seed must be ... (see `distilgan CMD --help`)``. Nothing heavy is imported
here: every command's add_parser uses this module.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

# The namespace attribute cli.py's parser fills with the dests the user actually gave (see given()).
GIVEN_ATTR = "_distilgan_given"
# torch.manual_seed and numpy's SeedSequence both take any integer in [0, 2**63).
SEED_MAX = 2**63 - 1


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
    if not math.isfinite(value):  # nan passes every comparison below, so refuse it here
        raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
    return value


def int_at_least(low: int, meaning: str = "") -> Callable[[str], int]:
    """An integer >= ``low``; ``meaning`` (e.g. "metrics need 2 samples") explains a bound above 1."""
    why = f" ({meaning})" if meaning else ""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}{why}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


def zero_or_at_least(low: int, zero_means: str) -> Callable[[str], int]:
    """0 (which means ``zero_means``) or an integer >= ``low``."""

    def parse(text: str) -> int:
        value = _int(text)
        if value != 0 and value < low:
            raise argparse.ArgumentTypeError(f"must be 0 ({zero_means}) or >= {low}, got {value}")
        return value

    parse.__name__ = f"zero_or_at_least_{low}"
    return parse


def nonneg_int(text: str) -> int:
    """A count that may be 0 (e.g. steps, 'all' sizes, worker processes)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """A count, size, number of steps or batch size: >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: 0 .. 2**63 - 1."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (a seed), got {value}")
    if value > SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be < 2**63 (a seed), got {value}")
    return value


def port(text: str) -> int:
    """A TCP port; 0 lets the system pick a free one."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def positive_float(text: str) -> float:
    """A learning rate, threshold, rate or duration that must be > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def nonneg_float(text: str) -> float:
    """A weight or duration where 0 means off."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (e.g. the ends of an output range)."""
    return _float(text)


def fraction(text: str) -> float:
    """A share of something: in (0, 1]."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {value:g}")
    return value


def decay(text: str) -> float:
    """An Adam beta, EMA decay or label smoothing: in [0, 1)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def positive_int_list(text: str) -> str:
    """A comma list of integers >= 1 (e.g. bench --batch 1,64); returned as given, for the command to split."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"must be a comma list of integers >= 1, got '{text}'")
    for part in parts:
        if not part.lstrip("+").isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"must be a comma list of integers >= 1, got '{text}'")
    return text


def batch_spec(text: str) -> str:
    """'dynamic' or a fixed batch size >= 1 (export --batch); returned as given."""
    if text != "dynamic" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be 'dynamic' or an integer >= 1, got '{text}'")
    return text


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the user gave the option stored in ``dest`` on the command line (not its default)."""
    return dest in getattr(args, GIVEN_ATTR, ())


def refuse_unless(args: argparse.Namespace, option: str, applies: bool, reason: str) -> None:
    """Refuse ``option`` when it was given but has no effect in the chosen mode (silently ignoring it
    would let the user believe it did something). ``reason`` says where it applies."""
    from distilgan.errors import UserError

    dest = option.lstrip("-").replace("-", "_")
    if not applies and given(args, dest):
        raise UserError(f"{option} {reason}; leave it out")


__all__ = [
    "GIVEN_ATTR", "batch_spec", "decay", "finite_float", "fraction", "given", "int_at_least",
    "nonneg_float", "nonneg_int", "port", "positive_float", "positive_int", "positive_int_list", "refuse_unless",
    "seed", "zero_or_at_least",
]
