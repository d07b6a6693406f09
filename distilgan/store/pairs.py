"""Edit pair sets (issue 18): the reader ``PairStore``, ``verify_pairs``, and the writer's API.

The format (docs/store.md, "Pair sets") and the writer live in ``pairs_writer.py``; this module is
what the image-to-image trainer and ``distilgan verify`` use::

    from distilgan.store.pairs import PairStore, write_pairs, verify_pairs, parse_edits
    ps = PairStore.open("pairs/")
    arrays = ps.load_all()                 # only the pairs the filter kept
    arrays = ps.load_all(filtered=False)   # every pair

Every read checks the shard's sha256 against the manifest the first time this process reads it (the
store's ``check_shard``; ``DISTILGAN_VERIFY_SHARDS=0`` skips it), so a changed shard fails with one line.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distilgan.errors import UserError
from distilgan.store.format import MANIFEST, plan_shards, read_npz, shard_name
from distilgan.store.pairs_writer import (DEFAULT_FILTER, PAIR_ARRAYS, PAIRS_FORMAT, PAIRS_FORMAT_VERSION,
                                          edit_index, filter_summary, kept_of, load_pairs_manifest, parse_edits,
                                          write_pairs)
from distilgan.utils.hashing import sha256_file
from distilgan.utils.noise import ZDistribution, rng

__all__ = ["DEFAULT_FILTER", "PAIR_ARRAYS", "PAIRS_FORMAT", "PAIRS_FORMAT_VERSION", "PairStore", "load_pairs_manifest",
           "parse_edits", "verify_pairs", "write_pairs"]


def _rerun_hint(message: str) -> str:
    # check_shard is the store's; its fix names the command that made a store
    return message.replace("distilgan sample command", "distilgan pairs command")


class PairStore:
    """Read access to a finished pair set: metadata from the manifest, arrays shard by shard."""

    def __init__(self, root: Path, manifest: dict[str, Any], verify: bool | None = None) -> None:
        from distilgan.store.reader import shard_checks_enabled

        self.root, self.manifest = root, manifest
        self.verify = shard_checks_enabled() if verify is None else bool(verify)
        try:
            self.shards: list[dict[str, Any]] = sorted(manifest["shards"], key=lambda e: int(e["index"]))
            self.edits: list[dict[str, Any]] = [{"name": str(e["name"]), "source": int(e["source"]),
                                                 "target": int(e["target"])} for e in manifest["edits"]]
            self.z_dim, self.num_classes = int(manifest["z_dim"]), int(manifest["num_classes"])
            self.resolution, self.channels = int(manifest["resolution"]), int(manifest["channels"])
            self.min_confidence = float(manifest["filter"]["min_confidence"])
            self.filtered = manifest["filter"]["classifier"] is not None  # False: made with --no-filter
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{root / MANIFEST} is malformed ({type(err).__name__}: {err}); run distilgan verify "
                            f"{root}, or remake the set with distilgan pairs --overwrite") from None
        self.class_names: list[str] | None = manifest.get("class_names")
        self.edit_names = [e["name"] for e in self.edits]
        self.num_shards = len(self.shards)
        self.num_pairs = sum(int(e["count"]) for e in self.shards)

    @classmethod
    def open(cls, folder: str | os.PathLike, allow_incomplete: bool = False, verify: bool | None = None) -> "PairStore":
        """``verify``: check each shard's sha256 when first read (None: the process default, on)."""
        manifest = load_pairs_manifest(folder)
        if not manifest.get("complete") and not allow_incomplete:
            raise UserError(f"pair set {folder} is incomplete (rerun the distilgan pairs command that made it)")
        return cls(Path(folder), manifest, verify=verify)

    def _read(self, i: int, names: Sequence[str] = PAIR_ARRAYS) -> dict[str, np.ndarray]:
        from distilgan.store.reader import check_shard

        entry = self.shards[i]
        path = self.root / entry["file"]
        if self.verify:
            try:
                check_shard(self.root, entry)
            except UserError as err:
                raise UserError(_rerun_hint(str(err))) from None
        try:
            with np.load(path, allow_pickle=False) as data:  # loads only the members asked for
                arrays = {name: data[name] for name in names}
        except FileNotFoundError:
            raise UserError(f"shard missing: {path} (run distilgan verify {self.root})") from None
        except KeyError as err:
            raise UserError(f"shard {path} lacks array {err} (run distilgan verify {self.root})") from None
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise UserError(f"unreadable shard {path}: {err} (run distilgan verify {self.root})") from None
        if any(len(array) != int(entry["count"]) for array in arrays.values()):
            raise UserError(f"shard {path} holds a different pair count than its manifest (run distilgan verify {self.root})")
        return arrays

    def read_shard(self, i: int) -> dict[str, np.ndarray]:
        """Every array of shard ``i``: z, edits, source_labels, target_labels, sources, targets (uint8
        NHWC), source_scores, target_scores."""
        return self._read(i)

    def _threshold(self, min_confidence: float | None) -> float:
        return self.min_confidence if min_confidence is None else float(min_confidence)

    def kept_mask(self, min_confidence: float | None = None) -> np.ndarray:
        """bool (num_pairs,): pairs whose source and target scores are both >= ``min_confidence`` (None:
        the manifest's threshold). A set made with --no-filter has no scores: every pair is True."""
        threshold = self._threshold(min_confidence)
        parts = [kept_of(a["source_scores"], a["target_scores"], threshold, self.filtered)
                 for a in (self._read(i, ("source_scores", "target_scores")) for i in range(self.num_shards))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)

    def load_all(self, filtered: bool = True, min_confidence: float | None = None) -> dict[str, np.ndarray]:
        """Every shard's arrays concatenated in pair order (the whole set in memory).

        ``filtered=True`` keeps only the pairs the filter keeps at ``min_confidence`` (None: the manifest's
        threshold); ``filtered=False`` returns every pair. A set made with --no-filter has no scores
        (NaN), so ``filtered=True`` returns all of its pairs too.
        """
        threshold = self._threshold(min_confidence)
        parts = []
        for i in range(self.num_shards):
            arrays = self._read(i)
            if filtered:  # per shard, so the dropped pairs never sit in memory twice
                mask = kept_of(arrays["source_scores"], arrays["target_scores"], threshold, self.filtered)
                arrays = {key: value[mask] for key, value in arrays.items()}
            parts.append(arrays)
        if not parts:
            image = (0, self.resolution, self.resolution, self.channels)
            shapes = {"z": ((0, self.z_dim), np.float32), "sources": (image, np.uint8), "targets": (image, np.uint8),
                      "source_scores": ((0,), np.float32), "target_scores": ((0,), np.float32)}
            return {key: np.zeros(*shapes.get(key, ((0,), np.int64))) for key in PAIR_ARRAYS}
        return {key: np.concatenate([p[key] for p in parts]) for key in PAIR_ARRAYS}

    def __repr__(self) -> str:
        return (f"PairStore({str(self.root)!r}, pairs={self.num_pairs}, shards={self.num_shards}, "
                f"edits={self.edit_names}, image={self.resolution}x{self.resolution}x{self.channels})")


# ----------------------------------------------------------------------------- verify


def _check_arrays(name: str, arrays: dict[str, np.ndarray], manifest: dict[str, Any], entry: dict[str, Any],
                  index: int) -> list[str]:
    """Problems with one readable shard: names, dtypes, shapes, the index rule, z, scores, kept counts."""
    count, start = int(entry["count"]), int(entry["start"])
    image = (count, manifest["resolution"], manifest["resolution"], manifest["channels"])
    expected = {"z": ((count, manifest["z_dim"]), np.float32), "sources": (image, np.uint8),
                "targets": (image, np.uint8), "source_scores": ((count,), np.float32),
                "target_scores": ((count,), np.float32)}
    expected = {key: expected.get(key, ((count,), np.int64)) for key in PAIR_ARRAYS}  # the rest: int64 (n,)
    problems = [f"{name}: array '{key}' missing" for key in PAIR_ARRAYS if key not in arrays]
    problems += [f"{name}: '{key}' is {arrays[key].dtype}{list(arrays[key].shape)}, expected {np.dtype(dtype)}{list(shape)}"
                 for key, (shape, dtype) in expected.items()
                 if key in arrays and (arrays[key].shape, arrays[key].dtype) != (shape, np.dtype(dtype))]
    if problems:
        return problems
    edits = manifest["edits"]
    which = edit_index(start, start + count, len(edits))
    if not np.array_equal(arrays["edits"], which):
        problems.append(f"{name}: edits differ from the interleaved edit order (pair i has edit i % {len(edits)})")
    for side in ("source", "target"):
        wanted = np.array([int(e[side]) for e in edits], dtype=np.int64)[which]
        if not np.array_equal(arrays[f"{side}_labels"], wanted):
            problems.append(f"{name}: {side}_labels differ from the {side} classes of the edits")
    z = ZDistribution.from_dict(manifest["z_distribution"]).sample(rng(int(manifest["seed"]), index), count,
                                                                  int(manifest["z_dim"]))
    if not np.array_equal(arrays["z"], z):
        problems.append(f"{name}: z differs from the seed's z stream for shard {index}")
    filtered = manifest["filter"]["classifier"] is not None
    scores = np.concatenate([arrays["source_scores"], arrays["target_scores"]])
    if filtered and not (np.isfinite(scores).all() and scores.min(initial=0) >= 0 and scores.max(initial=0) <= 1):
        problems.append(f"{name}: filter scores outside [0, 1]")
    if not filtered and not np.isnan(scores).all():
        problems.append(f"{name}: scores in a set made without a filter (expected NaN)")
    mask = kept_of(arrays["source_scores"], arrays["target_scores"], float(manifest["filter"]["min_confidence"]), filtered)
    if int(mask.sum()) != entry.get("kept"):
        problems.append(f"{name}: {int(mask.sum())} pairs pass the filter, the manifest says {entry.get('kept')}")
    return problems


def _verify_entry(root: Path, entry: dict[str, Any], manifest: dict[str, Any], index: int) -> list[str]:
    name = shard_name(index)
    if not (root / name).is_file():
        return [f"{name}: missing (rerun the same distilgan pairs command)"]
    if sha256_file(root / name) != entry.get("sha256"):
        return [f"{name}: checksum mismatch (corrupt or changed; rerunning the same distilgan pairs command "
                "regenerates it)"]
    try:
        arrays = read_npz(root / name)
    except Exception as err:  # noqa: BLE001 - any unreadable zip/npy is one problem to report
        return [f"{name}: unreadable ({type(err).__name__}: {err})"]
    return _check_arrays(name, arrays, manifest, entry, index)


def verify_pairs(folder: str | os.PathLike, progress: bool = False) -> list[str]:
    """Re-check a pair set: manifest, every shard's checksum, arrays, the edit index rule, z, scores and
    kept counts. Returns the problems, one line each naming the shard; [] when the set is good."""
    from distilgan.utils.progress import progress_bar

    root = Path(folder)
    try:
        manifest = load_pairs_manifest(root)
    except UserError as err:
        return [str(err)]
    try:
        PairStore(root, manifest, verify=False)  # the header keys every reader needs
        ZDistribution.from_dict(manifest["z_distribution"])
        int(manifest["seed"])
        plan = plan_shards(int(manifest["per_edit"]), list(manifest["edits"]), int(manifest["shard_size"]))
        entries = {int(e["index"]): e for e in manifest["shards"]}
        summary = filter_summary(manifest, list(entries.values()))
    except UserError as err:
        return [str(err)]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return [f"{root / MANIFEST}: malformed ({type(err).__name__}: {err})"]
    problems: list[str] = []
    if len(entries) < len(plan):
        problems.append(f"set is incomplete: {len(entries)} of {len(plan)} shards written "
                        "(rerun the same distilgan pairs command to finish it)")
    for index, start, count in progress_bar(plan, desc="verifying", unit="shard", disable=not progress):
        entry = entries.pop(index, None)
        if entry is None:
            state = "not recorded in the manifest (unfinished)" if (root / shard_name(index)).exists() else "missing"
            problems.append(f"{shard_name(index)}: {state} (rerun the same distilgan pairs command)")
        elif (int(entry.get("start", -1)), int(entry.get("count", -1))) != (start, count):
            problems.append(f"{shard_name(index)}: covers pairs {entry.get('start')}+{entry.get('count')}, "
                            f"expected {start}+{count}")
        else:
            problems.extend(_verify_entry(root, entry, manifest, index))
    problems.extend(f"{shard_name(k)}: not part of the planned set" for k in sorted(entries))
    recorded = manifest.get("filter", {})
    for key in ("kept", "total", "kept_per_edit"):
        if recorded.get(key) != summary[key]:
            problems.append(f"{MANIFEST}: filter {key} {recorded.get(key)} differs from the shards' {summary[key]}")
    if not problems and summary["total"] != manifest.get("total"):
        problems.append(f"shards hold {summary['total']} pairs, manifest total is {manifest.get('total')}")
    return problems
