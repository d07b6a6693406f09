"""Reading a distillation set: verification of every shard, and array access for training.

Every reader (training, in-loop metric references, demo) goes through
:meth:`DistillationStore.read_shard`, which checks a shard's sha256 against the manifest the first
time this process reads it, so a shard changed after ``sample`` fails with one line instead of
being trained on. ``--no-verify-shards`` (distill) or ``DISTILGAN_VERIFY_SHARDS=0`` skip the check.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.store.format import (
    ARRAYS,
    MANIFEST,
    class_counts,
    load_manifest,
    plan_shards,
    read_npz,
    shard_name,
)
from distilgan.errors import UserError
from distilgan.utils.hashing import sha256_file
from distilgan.utils.noise import ZDistribution, balanced_labels


# ----------------------------------------------------------------------------- verify


def _verify_shard(out_dir: Path, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = str(entry.get("file"))
    path = out_dir / name
    if not path.is_file():
        return [f"{name}: missing (rerun the same distilgan sample command)"]
    if sha256_file(path) != entry.get("sha256"):
        return [f"{name}: checksum mismatch (corrupt or changed; rerunning the same distilgan sample command "
                "regenerates it)"]
    try:
        arrays = read_npz(path)
    except Exception as err:  # noqa: BLE001 - any unreadable zip/npy is one problem to report
        return [f"{name}: unreadable ({type(err).__name__}: {err})"]
    count = int(entry.get("count", -1))
    res, ch, z_dim = manifest["resolution"], manifest["channels"], manifest["z_dim"]
    expected = {"z": ((count, z_dim), np.float32), "labels": ((count,), np.int64), "images": ((count, res, res, ch), np.uint8)}
    problems = []
    for key, (shape, dtype) in expected.items():
        array = arrays.get(key)
        if array is None:
            problems.append(f"{name}: array '{key}' missing")
        elif array.shape != shape or array.dtype != dtype:
            problems.append(f"{name}: '{key}' is {array.dtype}{list(array.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    if problems:
        return problems
    start = int(entry.get("start", 0))
    if not np.array_equal(arrays["labels"], balanced_labels(start, start + count, manifest["classes"])):
        problems.append(f"{name}: labels differ from the interleaved class order")
    counts = class_counts(arrays["labels"], [int(c) for c in manifest["classes"]])
    if counts != entry.get("counts_per_class"):
        problems.append(f"{name}: counts per class {counts} differ from the manifest's {entry.get('counts_per_class')}")
    return problems


def verify_store(out_dir: str | os.PathLike, progress: bool = False) -> list[str]:
    """Re-check a set: manifest, every shard's checksum, arrays, labels and counts. [] = good."""
    out_dir = Path(out_dir)
    try:
        manifest = load_manifest(out_dir)
    except UserError as err:
        return [str(err)]
    problems: list[str] = []
    try:
        plan = plan_shards(int(manifest["per_class"]), [int(c) for c in manifest["classes"]], int(manifest["shard_size"]))
        entries = {int(e["index"]): e for e in manifest["shards"]}
    except (KeyError, TypeError, ValueError) as err:
        return [f"{out_dir / MANIFEST}: malformed ({type(err).__name__}: {err})"]
    if len(entries) < len(plan):
        problems.append(f"set is incomplete: {len(entries)} of {len(plan)} shards written "
                        "(rerun the same distilgan sample command to finish it)")
    from distilgan.utils.progress import progress_bar

    for index, start, count in progress_bar(plan, desc="verifying", unit="shard", disable=not progress):
        entry = entries.get(index)
        if entry is None:
            if (out_dir / shard_name(index)).exists():
                problems.append(f"{shard_name(index)}: not recorded in the manifest (unfinished)")
            else:
                problems.append(f"{shard_name(index)}: missing (rerun the same distilgan sample command)")
            continue
        if (int(entry.get("start", -1)), int(entry.get("count", -1))) != (start, count):
            problems.append(f"{entry.get('file')}: covers samples {entry.get('start')}+{entry.get('count')}, "
                            f"expected {start}+{count}")
            continue
        problems.extend(_verify_shard(out_dir, entry, manifest))
    extra = sorted(set(entries) - {k for k, _, _ in plan})
    problems.extend(f"{shard_name(k)}: not part of the planned set" for k in extra)
    written = sum(int(e.get("count", 0)) for e in entries.values())
    if not extra and len(entries) == len(plan) and written != manifest.get("total"):
        problems.append(f"shards hold {written} samples, manifest total is {manifest.get('total')}")
    return problems


# ----------------------------------------------------------------------------- shard checks

VERIFY_ENV = "DISTILGAN_VERIFY_SHARDS"  # "0" turns the read-time check off for every command
_CHECKS = {"enabled": True}  # the process default; commands with --no-verify-shards switch it off
# (resolved path, size, mtime_ns, manifest sha256) of shards this process has hashed and found good:
# a shard is hashed once per process however often it is read (epochs, metric references)
_VERIFIED: set[tuple[str, int, int, str]] = set()


def set_shard_checks(enabled: bool) -> None:
    """Process default for stores opened without an explicit ``verify`` (``--no-verify-shards``)."""
    _CHECKS["enabled"] = bool(enabled)


def shard_checks_enabled() -> bool:
    """Whether a store opened now checks its shards: the process default, unless the env var says 0."""
    if os.environ.get(VERIFY_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _CHECKS["enabled"]


def check_shard(root: Path, entry: dict[str, Any]) -> None:
    """Raise a one-line UserError when shard ``entry``'s file does not hash to the manifest's sha256.

    Streams the file through hashlib (4 MiB chunks), so the read that follows comes from the page cache.
    """
    path = root / str(entry["file"])
    expected = entry.get("sha256")
    if not isinstance(expected, str):
        return  # nothing recorded to check against (verify reports such a manifest)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise UserError(f"shard missing: {path} (run distilgan verify {root}; rerunning the distilgan sample "
                        "command that made the set regenerates it)") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise UserError(
            f"shard {entry['file']} of {root} fails its checksum (manifest sha256 {expected[:12]}..., file "
            f"{actual[:12]}...): corrupt or changed since sampling; run distilgan verify {root}, then rerun the "
            "distilgan sample command that made the set to regenerate it (good shards are kept)"
        )
    _VERIFIED.add(key)


# ----------------------------------------------------------------------------- reader


_NOTICED: set[str] = set()


def _z_distribution(root: Path, manifest: dict[str, Any]) -> ZDistribution:
    """The manifest's ``z_distribution``; older spellings are read as what they meant, with one line."""
    value = manifest.get("z_distribution")
    try:
        distribution = ZDistribution.from_dict(value)
    except (TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{root / MANIFEST} has an invalid z_distribution {value!r} ({err}); resample the set") from None
    if (not isinstance(value, dict) or value.get("kind") != distribution.kind) and str(root) not in _NOTICED:
        _NOTICED.add(str(root))  # once per set and process (data loader workers open it again)
        shown = "no z_distribution" if value is None else f"z_distribution {json.dumps(value)}"
        print(f"distilgan: note: {root} predates named z kinds ({shown}): reading it as z ~ {distribution.describe()}",
              file=sys.stderr, flush=True)
    return distribution



class DistillationStore:
    """Read access to a finished set: metadata from the manifest, arrays shard by shard."""

    def __init__(self, root: Path, manifest: dict[str, Any], verify: bool | None = None) -> None:
        self.root, self.manifest = root, manifest
        # fixed at open time so it travels with the store into DataLoader worker processes
        self.verify = shard_checks_enabled() if verify is None else bool(verify)
        self.shards: list[dict[str, Any]] = sorted(manifest["shards"], key=lambda e: int(e["index"]))
        self.num_shards = len(self.shards)
        self.num_samples = sum(int(e["count"]) for e in self.shards)
        self.z_dim, self.num_classes = int(manifest["z_dim"]), int(manifest["num_classes"])
        self.resolution, self.channels = int(manifest["resolution"]), int(manifest["channels"])
        self.class_names: list[str] | None = manifest.get("class_names")
        self.classes = [int(c) for c in manifest["classes"]]  # the sampled ones, in label order
        self.z_distribution = _z_distribution(root, manifest)  # what a student of this set is trained on

    @classmethod
    def open(cls, out_dir: str | os.PathLike, allow_incomplete: bool = False,
             verify: bool | None = None) -> "DistillationStore":
        """``verify``: check each shard's sha256 when first read (None: the process default, on)."""
        root = Path(out_dir)
        if not root.is_dir():
            raise UserError(f"distillation set not found: {out_dir} (make one with distilgan sample)")
        manifest = load_manifest(root)
        if not manifest.get("complete") and not allow_incomplete:
            raise UserError(f"distillation set {out_dir} is incomplete (rerun the distilgan sample command that made it)")
        return cls(root, manifest, verify=verify)

    def shard_counts(self) -> list[int]:
        return [int(e["count"]) for e in self.shards]

    def read_shard(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z float32 (n, z_dim), labels int64 (n,), images uint8 (n, H, W, C)) of shard ``i``."""
        entry = self.shards[i]
        path = self.root / entry["file"]
        if self.verify:
            check_shard(self.root, entry)
        try:
            arrays = read_npz(path)
        except FileNotFoundError:
            raise UserError(f"shard missing: {path} (run distilgan verify {self.root})") from None
        except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
            raise UserError(f"unreadable shard {path}: {err} (run distilgan verify {self.root})") from None
        try:
            z, labels, images = (arrays[k] for k in ARRAYS)
        except KeyError as err:
            raise UserError(f"shard {path} lacks array {err} (run distilgan verify {self.root})") from None
        if len(z) != entry["count"] or len(labels) != entry["count"] or len(images) != entry["count"]:
            raise UserError(f"shard {path} holds a different sample count than its manifest (run distilgan verify)")
        return z, labels, images

    def load_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every sample in index order (needs the whole set in memory)."""
        parts = [self.read_shard(i) for i in range(self.num_shards)]
        if not parts:
            return (np.zeros((0, self.z_dim), np.float32), np.zeros((0,), np.int64),
                    np.zeros((0, self.resolution, self.resolution, self.channels), np.uint8))
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"DistillationStore({str(self.root)!r}, samples={self.num_samples}, shards={self.num_shards}, "
                f"classes={len(self.classes)}, image={self.resolution}x{self.resolution}x{self.channels})")
