"""The one progress factory of the package, and the quiet switch.

Every loop that reports progress builds its bar with :func:`progress_bar`:

* quiet (``--quiet`` on a command, or ``DISTILGAN_QUIET=1``): nothing is shown;
* stderr is a terminal (or a Jupyter kernel): a normal tqdm bar, redrawn in place;
* otherwise (a log file, a pipe, CI, a batch job): plain lines, one every ``every_percent`` of the
  total and at least every ``every_seconds``, never a carriage return, so logs stay readable.

The object returned supports what the package uses of tqdm: iteration, ``update``,
``set_postfix``, ``set_description``, ``close`` and ``with``. :func:`note` prints the one-line
``distilgan: note: ...`` remarks that are not errors (the same channel as the CLI's errors).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from typing import Any, Iterable, Iterator

QUIET_ENV = "DISTILGAN_QUIET"
EVERY_PERCENT = 10.0
EVERY_SECONDS = 30.0

_quiet = False


def set_quiet(value: bool) -> None:
    """Silence (or restore) every progress bar of this process; the CLI sets it from ``--quiet``."""
    global _quiet
    _quiet = bool(value)


def is_quiet() -> bool:
    """True when ``--quiet`` was given or ``DISTILGAN_QUIET`` is set to anything but 0/false/no."""
    return _quiet or os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


def note(message: str) -> None:
    """One line on stderr for a caveat the user should see (not an error): ``distilgan: note: ...``.

    Notes are kept under ``--quiet``: they say a figure is not comparable, which a log must keep."""
    print(f"distilgan: note: {message}", file=sys.stderr, flush=True)


def add_quiet_option(parser: Any) -> None:
    """Give a command ``--quiet`` unless it has its own (sample and verify do; same meaning)."""
    if "--quiet" not in getattr(parser, "_option_string_actions", {}):
        parser.add_argument("--quiet", action="store_true",
                            help=f"no progress bars or progress lines (also: {QUIET_ENV}=1); results and notes still print")


def _is_ours(filename: str) -> bool:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.abspath(filename).startswith(package + os.sep)


@contextlib.contextmanager
def warnings_as_notes() -> Iterator[None]:
    """Inside the CLI, a UserWarning raised by distilgan itself prints as one ``note`` line (no
    source line, no category); warnings of other packages keep Python's format."""
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if issubclass(category, UserWarning) and _is_ours(filename):
                note(str(message))
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _interactive() -> bool:
    """Whether in-place bars make sense: a terminal on stderr, or a notebook kernel (tqdm.auto)."""
    stream = sys.stderr
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or odd stream
        return False
    return "ipykernel" in sys.modules


def _count(n: float, unit_scale: bool) -> str:
    from tqdm import tqdm

    return tqdm.format_sizeof(n) if unit_scale else f"{n:g}" if isinstance(n, float) else str(n)


class LineProgress:
    """tqdm's interface, writing a plain line per step of progress (for logs: no ``\\r``)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: float = 0,
        unit_scale: bool = False,
        every_percent: float = EVERY_PERCENT,
        every_seconds: float = EVERY_SECONDS,
        stream: Any = None,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.n = self.initial = initial
        self.unit_scale, self.every_percent, self.every_seconds = unit_scale, every_percent, every_seconds
        self.stream = stream
        self.postfix = ""
        self.started = self.last_time = time.monotonic()
        self.last_n = initial
        self.next_percent = self._percent(initial) // every_percent * every_percent + every_percent if total else None
        self.closed = False

    def _percent(self, n: float) -> float:
        return 100.0 * n / self.total if self.total else 0.0

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress object wraps no iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        due_percent = self.next_percent is not None and self._percent(self.n) >= self.next_percent
        if due_percent or now - self.last_time >= self.every_seconds:
            self._emit(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def refresh(self) -> None:
        """Nothing to redraw: lines are written when progress is due."""

    def write(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n != self.last_n:  # the end, unless the last line already said it
            self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        from tqdm import tqdm

        elapsed = now - self.started
        done = self.n - self.initial
        parts = [f"{self.desc}: {_count(self.n, self.unit_scale)}"]
        if self.total:
            parts[0] += f"/{_count(self.total, self.unit_scale)} {self.unit} ({self._percent(self.n):.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{_count(rate, self.unit_scale) if self.unit_scale else f'{rate:.3g}'} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"eta {tqdm.format_interval((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.stream or sys.stderr, flush=True)
        self.last_time, self.last_n = now, self.n
        if self.next_percent is not None:
            while self.next_percent <= self._percent(self.n):
                self.next_percent += self.every_percent


def progress_bar(
    iterable: Iterable | None = None,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    initial: float = 0,
    unit_scale: bool = False,
    **tqdm_options: Any,
) -> Any:
    """A tqdm bar, plain progress lines, or nothing: see the module docstring.

    ``disable`` is the caller's own reason to show nothing (e.g. ``progress=False``, a worker rank);
    ``leave`` and other tqdm options only matter for in-place bars."""
    from tqdm.auto import tqdm

    if disable or is_quiet():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if _interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                    unit_scale=unit_scale, **tqdm_options)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, unit_scale=unit_scale)


__all__ = ["LineProgress", "QUIET_ENV", "add_quiet_option", "is_quiet", "note", "progress_bar", "set_quiet",
           "warnings_as_notes"]
