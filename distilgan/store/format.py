"""The distillation-set format: file names, byte-stable npz shards, classes, shard plan, manifest.

Shared by the writer (writer.py) and the readers (reader.py, stream.py); see docs/store.md.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.labels import resolve_labels

FORMAT_NAME = "distilgan-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
ARRAYS = ("z", "labels", "images")
# Fixed zip member timestamp (the zip epoch) so the same arrays always give the same file bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


# A DDP rank records each finished shard in ``.entry-NNNNN.json`` ({"settings", "entry"}) beside it, since
# rank 0 writes the manifest once, at the end; a resumed run (any number of ranks) keeps those shards.
ENTRY_PREFIX = ".entry-"


def write_entry(out_dir: Path, settings: dict[str, Any], entry: dict[str, Any]) -> None:
    from distilgan.utils.atomic import atomic_path

    with atomic_path(Path(out_dir) / f"{ENTRY_PREFIX}{int(entry['index']):05d}.json") as tmp:
        tmp.write_text(json.dumps({"settings": settings, "entry": entry}, sort_keys=True), encoding="utf-8")


def read_entries(out_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(settings, shard entry) of every entry file DDP ranks left in ``out_dir``."""
    found = []
    for path in sorted(Path(out_dir).glob(f"{ENTRY_PREFIX}*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            found.append((dict(record["settings"]), dict(record["entry"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # written atomically, so only a foreign file gets here: its shard is regenerated
    return found


def clear_entries(out_dir: Path) -> None:
    for path in Path(out_dir).glob(f"{ENTRY_PREFIX}*.json"):
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- npz shards


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Uncompressed npz readable by ``np.load``, byte-identical for identical arrays.

    ``np.savez`` stamps each member with the current time; here every member gets ``ZIP_EPOCH``.
    """
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


# ----------------------------------------------------------------------------- classes


def resolve_classes(
    classes: Sequence[int | str] | None, num_classes: int, class_names: Sequence[str] | None = None
) -> list[int]:
    """Class indices from indices or names (``["0", "3"]``, ``["cat", "dog"]``, any case); None = all.

    The one label resolver (``utils.labels``), lenient as for typed ``--classes``, each class once.
    """
    if classes is None or len(classes) == 0:
        return list(range(num_classes))
    return resolve_labels(classes, class_names, num_classes, strict=False, unique=True, owner="the teacher's").tolist()


# ----------------------------------------------------------------------------- manifest


def plan_shards(per_class: int, classes: list[int], shard_size: int) -> list[tuple[int, int, int]]:
    """(index, start, count) of every shard; the last one may be partial."""
    total = per_class * len(classes)
    return [(k, start, min(shard_size, total - start)) for k, start in enumerate(range(0, total, shard_size))]


def class_counts(labels: np.ndarray, classes: list[int]) -> dict[str, int]:
    found = np.bincount(labels, minlength=max(classes) + 1)
    return {str(c): int(found[c]) for c in classes}


def load_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no {MANIFEST} in {out_dir} (not a distillation set; make one with distilgan sample)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"unreadable {path}: {err} (rerun distilgan sample with --overwrite)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise UserError(f"{path} is not a distilgan store manifest (rerun distilgan sample with --overwrite)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has store format {manifest.get('format_version')}, this distilgan reads {FORMAT_VERSION} "
            "(resample the set with this version)"
        )
    return manifest
