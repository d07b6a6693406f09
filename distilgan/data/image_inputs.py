"""Image files given on a command line (``--in`` files, folders, zips of images), checked and decoded for
a model of a given size: what ``translate`` and ``invert`` share.

Every file is checked (readable image, size) before any output is written, so a bad input fails in
one line and leaves nothing half done; output names keep each input's relative path, made unique.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError

PROGRESS_FROM = 64  # images; fewer finish before a bar says anything useful


@dataclass
class Item:
    files: Any  # data.image_files.FolderFiles or ZipFiles
    name: str  # inside ``files``
    out_name: str  # relative output path, before collisions are resolved
    source: Path | None  # the file on disk (None inside a zip): an output must never replace it


def _clean_relative(name: str) -> str:
    # zip member names can be absolute or climb out with ".."; outputs must stay inside --out
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return str(Path(*parts).with_suffix(".png").as_posix()) if parts else "image.png"


def collect_inputs(paths: list[str], out: Path) -> tuple[list[Item], int]:
    """Every image under the --in paths, in order, and how many non-image files were skipped."""
    from distilgan.data.image_files import FolderFiles, ZipFiles, is_image

    items: list[Item] = []
    skipped = 0
    out_resolved = out.resolve()
    for text in paths:
        path = Path(text).expanduser()
        if not path.exists():
            raise UserError(f"--in {text}: no such file or folder (give image files, folders or a .zip of images)")
        if path.is_dir():
            if path.resolve() == out_resolved:
                raise UserError(f"--out {out} is also an --in folder: its images would be replaced (choose another --out)")
            files, names = FolderFiles(path), FolderFiles(path).names()
            root = path.resolve()
        elif path.suffix.lower() == ".zip":
            files, names, root = ZipFiles(path), ZipFiles(path).names(), None
        else:  # a single file is tried whatever its suffix: decoding says whether it is an image
            files, root = FolderFiles(path.parent), path.parent.resolve()
            items.append(Item(files, path.name, _clean_relative(path.name), path.resolve()))
            continue
        found = []
        for name in names:
            if root is not None and (root / name).resolve().is_relative_to(out_resolved):
                continue  # earlier outputs of a --out inside this folder are not inputs
            if is_image(name):
                found.append(Item(files, name, _clean_relative(name), None if root is None else (root / name).resolve()))
            else:
                skipped += 1
        if not found:
            raise UserError(f"--in {text} holds no images (PNG/JPEG files)")
        items += found
    return items, skipped


def unique_names(names: list[str], exact: list[bool] | None = None) -> list[str]:
    """Output names made distinct (case-insensitively, for case-insensitive file systems): a later
    duplicate of ``a.png`` becomes ``a-1.png``, ``a-2.png`` ... Names marked ``exact`` (an input
    already called ``a.png``) are served first, so ``a.png`` keeps its name beside ``a.jpg``."""
    exact = exact or [False] * len(names)
    order = sorted(range(len(names)), key=lambda i: not exact[i])  # stable: input order within each group
    taken: set[str] = set()
    out = [""] * len(names)
    for i in order:
        candidate, n = names[i], 0
        stem, suffix = os.path.splitext(names[i])
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}-{n}{suffix}"
        taken.add(candidate.lower())
        out[i] = candidate
    return out


def _open(item: Item) -> Any:
    from PIL import Image

    where = item.files.where(item.name)
    try:
        return Image.open(io.BytesIO(item.files.read(item.name)))
    except Image.UnidentifiedImageError:
        raise UserError(f"{where} is not an image (give PNG or JPEG files, or remove it)") from None
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, Image.DecompressionBombError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot read image {where}: {detail} (give PNG or JPEG files, or remove it)") from None


def check_inputs(items: list[Item], resolution: int, channels: int, resize: bool, model: str = "the translator") -> None:
    """Refuse unreadable files and (without --resize) wrong sizes before any output; notes for conversions."""
    from distilgan.utils.progress import note, progress_bar

    wrong_size: list[tuple[Item, tuple[int, int]]] = []
    modes: Counter[str] = Counter()
    wanted = "L" if channels == 1 else "RGB"
    for item in progress_bar(items, desc="check", unit="img", disable=len(items) < PROGRESS_FROM):
        with _open(item) as image:  # reads the header only
            if image.size != (resolution, resolution):
                wrong_size.append((item, image.size))
            if image.mode not in (wanted, "P"):  # a palette PNG without alpha converts exactly
                modes[image.mode] += 1
    if wrong_size:
        item, (w, h) = wrong_size[0]
        more = f" (and {len(wrong_size) - 1} more)" if len(wrong_size) > 1 else ""
        if not resize:
            raise UserError(f"{item.files.where(item.name)}{more} is {w}x{h} but {model} takes "
                            f"{resolution}x{resolution} images (pass --resize to resize them)")
        stretched = sum(1 for _, (w, h) in wrong_size if w != h)
        note(f"resized {len(wrong_size)} images to {resolution}x{resolution} (area when shrinking, bicubic when enlarging"
             f"{f'; {stretched} non-square ones are stretched' if stretched else ''})")
    if modes:
        shown = ", ".join(f"{count} {mode}" for mode, count in modes.most_common())
        note(f"converted {sum(modes.values())} images ({shown}) to {wanted}: the model takes {channels} channel"
             f"{'s' if channels > 1 else ''}{'; alpha dropped' if any('A' in m for m in modes) else ''}")


def decode_item(item: Item, resolution: int, channels: int, resize: bool) -> np.ndarray:
    """One image as uint8 (resolution, resolution, channels), converted and (when asked) resized."""
    from distilgan.utils.images import fit_pil

    with _open(item) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as err:  # a truncated file passes the header check
            raise UserError(f"cannot decode image {item.files.where(item.name)}: {err} (remove or replace it)") from None
        return fit_pil(image, resolution, channels, resize=resize, where=item.files.where(item.name))
