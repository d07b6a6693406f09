"""Image files in a folder or a zip, behind one interface, and fast decoding to one uint8 array."""

from __future__ import annotations

import io
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from distilgan.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SPLIT_FOLDERS = ("train", "test", "val", "valid", "validation")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


# --- file access: one interface for folders and zips ------------------------------------------


class FolderFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(folder).relative_to(self.root)
            found += [(rel / f).as_posix() for f in files if not f.startswith(".")]
        return sorted(found)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def where(self, name: str) -> str:
        return str(self.root / name)


class ZipFiles:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()  # one ZipFile handle per decoding thread

    def _zip(self) -> zipfile.ZipFile:
        if not hasattr(self._local, "zip"):
            self._local.zip = zipfile.ZipFile(self.path)
        return self._local.zip

    def names(self) -> list[str]:
        try:
            infos = self._zip().infolist()
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"cannot open zip {self.path}: {err} (the file is corrupt or not a zip)") from None
        skip = lambda n: n.startswith("__MACOSX/") or any(p.startswith(".") for p in n.split("/"))  # noqa: E731
        return sorted(i.filename for i in infos if not i.is_dir() and not skip(i.filename))

    def read(self, name: str) -> bytes:
        return self._zip().read(name)

    def close(self) -> None:  # worker threads' handles close when their threads end
        if hasattr(self._local, "zip"):
            self._local.zip.close()

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def strip_wrapper(names: list[str], min_depth: int) -> str:
    """Common wrapping folders to skip (e.g. a zip of ``data/``) while every name keeps ``min_depth`` parts."""
    prefix: list[str] = []
    parts = [n.split("/") for n in names]
    while parts and all(len(p) > len(prefix) + min_depth for p in parts):
        head = {p[len(prefix)] for p in parts}
        if len(head) != 1 or next(iter(head)) in SPLIT_FOLDERS:
            break
        prefix.append(head.pop())
    return "/".join(prefix) + "/" if prefix else ""


# --- decoding ---------------------------------------------------------------------------------


def default_workers() -> int:
    # Small images are dominated by per-file Python work that holds the GIL; measured on 2 cores, two
    # threads were slower than one, so use half the cores (at most 8) and decode in-line on 1-2 cores.
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def decode_images(files, names: list[str], workers: int | None, desc: str) -> np.ndarray:
    """Decode every named file to one uint8 NHWC array (RGB, or 1 channel if all are grayscale)."""
    from PIL import Image
    from distilgan.utils.progress import progress_bar

    def decode(name: str) -> tuple[np.ndarray, bool]:
        try:
            with Image.open(io.BytesIO(files.read(name))) as image:
                gray = image.mode in GRAY_MODES
                return np.asarray(image.convert("L" if gray else "RGB")), gray
        except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, Image.DecompressionBombError) as err:
            raise UserError(f"cannot decode image {files.where(name)}: {err} (remove or replace the file)") from None

    first, _ = decode(names[0])
    height, width = first.shape[:2]
    out = np.empty((len(names), height, width, 3), dtype=np.uint8)
    gray = np.zeros(len(names), dtype=bool)

    def decode_chunk(start: int, stop: int) -> int:
        for i in range(start, stop):
            array, gray[i] = decode(names[i])
            if array.shape[:2] != (height, width):
                raise UserError(
                    f"image {files.where(names[i])} is {array.shape[1]}x{array.shape[0]} but {files.where(names[0])} is "
                    f"{width}x{height} (all images must share one size; resize them first)"
                )
            out[i] = array[..., None] if gray[i] else array  # gray broadcasts to 3 equal channels
        return stop - start

    chunk = 1000
    bounds = [(s, min(s + chunk, len(names))) for s in range(0, len(names), chunk)]
    workers = workers or default_workers()
    with progress_bar(total=len(names), desc=desc, unit="img", disable=len(names) < 2000) as bar:
        if workers == 1:
            for start, stop in bounds:
                bar.update(decode_chunk(start, stop))
        else:
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(decode_chunk, *b) for b in bounds]
                try:
                    for future in futures:
                        bar.update(future.result())
                except BaseException:  # a bad file: stop the queued chunks instead of decoding them all
                    for future in futures:
                        future.cancel()
                    raise
    # Same rule as Pillow's convert("RGB") of an L image (channel copies), so mixed sets stay exact.
    return np.ascontiguousarray(out[..., :1]) if gray.all() else out
