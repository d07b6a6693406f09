"""One check for every option that names a file or folder to write, run before any slow work.

A bad place (under an existing file, in a folder we may not write, a file where a folder is wanted or
the other way round) must fail in one line when the command starts, not as a FileExistsError or
NotADirectoryError traceback after an hour of sampling. Nothing is created here, so a refused command
leaves nothing behind; the writers create the folders themselves (utils/atomic.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from distilgan.errors import UserError


def _nearest_existing(path: Path, option: str) -> Path:
    """``path`` itself or its closest ancestor that exists (``.`` for a relative path)."""
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and not candidate.exists():
            raise UserError(f"{option} {path}: {candidate} is a broken link; choose another {option}")
        if candidate.exists():
            return candidate
    return Path(".")


def _check_place(path: Path, option: str) -> Path:
    """The nearest existing ancestor of ``path``; refused when it is a file (nothing can go below it)."""
    existing = _nearest_existing(path, option)
    if existing != path and not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is a file, not a folder; choose another {option}")
    return existing


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _check_writable(folder: Path, path: Path, option: str) -> None:
    # the nearest existing folder: that is where the first mkdir or temporary file goes
    if not _writable(folder):
        raise UserError(f"{option} {path}: cannot write in {folder} (permission denied); choose another {option}")


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse a file to write that cannot be written: a folder of that name, a file on the way, no permission.

    An existing file is fine (it is replaced atomically, which needs its folder to be writable).
    """
    text = os.fspath(path)
    if not text or text.endswith(("/", os.sep)):
        raise UserError(f"{option} '{text}' names a folder; give a file path")
    out = Path(text)
    if out.is_dir():
        raise UserError(f"{option} {out} is a folder, not a file; give a file path (a new name, or one inside it)")
    existing = _check_place(out, option)
    _check_writable(out.parent if existing == out else existing, out, option)
    return out


def check_output_dir(path: str | os.PathLike, option: str = "--out", replace: bool = False) -> Path:
    """Refuse a folder to write that cannot be written: a file of that name, a file on the way, no permission.

    An existing folder is fine (runs and stores resume in it). ``replace``: the command swaps the folder
    as a whole (utils/atomic.atomic_dir), so its parent must be writable too.
    """
    text = os.fspath(path)
    if not text:
        raise UserError(f"{option} is empty; give a folder path")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} is a file, not a folder; choose another {option} (or remove the file)")
    existing = _check_place(out, option)
    _check_writable(existing, out, option)
    if replace and existing == out:
        _check_writable(out.parent, out, option)
    return out


__all__ = ["check_output_dir", "check_output_file"]
