"""One-line reasons an ``.npz`` cannot be read, instead of numpy's advice to pass allow_pickle.

numpy answers a file that is not a zip (a text file, a pickle, a lone ``.npy``) with "This file
contains pickled (object) data ... allow_pickle=True": advice we never want to give, since loading
pickles can run code. We say what the file is instead.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

NPY_MAGIC = b"\x93NUMPY"


def npz_problem(path: str | os.PathLike, err: BaseException | None = None) -> str:
    """Why ``path`` is not a readable npz, in words for a UserError (no allow_pickle advice)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except OSError as os_err:
        return f"cannot read {path}: {os_err.strerror or os_err}"
    if head == NPY_MAGIC:
        return f"{path} is a single .npy array, not an .npz archive of named arrays (save them with numpy.savez(path, name=array, ...))"
    if not zipfile.is_zipfile(path):
        return (f"{path} is not an .npz file (an .npz is a zip of .npy arrays, as numpy.savez writes; "
                "this file is not a zip)")
    if err is not None and "pickle" in str(err).lower():
        return (f"{path} holds object (pickled) arrays, which are never loaded since they can run code "
                "(save plain arrays with numpy.savez)")
    detail = str(err).split(". ")[0] if err is not None else "unreadable"
    return f"cannot read {path}: {detail} (save it again with numpy.savez)"
