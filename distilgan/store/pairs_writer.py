"""Writing an edit pair set: for one z, the teacher's image of a source class and of a target class.

An image-to-image student (issue 18) learns "this automobile, as a truck" from pairs
``(G(z, source), G(z, target))``: the same z keeps pose and layout, the class changes. A pair set is
a folder like the distillation store (docs/store.md, "Pair sets")::

    manifest.json          what made the set, the edits, the filter's kept counts, one entry per shard
    shard-00000.npz        z, edits, source_labels, target_labels, sources, targets, source_scores, target_scores

Pair ``i`` has edit ``edits[i % len(edits)]``; shard k's z is ``ZDistribution.sample(rng(seed, k), ...)``,
as in the store, so everything in a shard follows from (seed, shard index, teacher, edits, filter) and a
killed run resumes shard by shard, byte-identical. The folder handling (lock, resume, refusing a set of
other settings) and the shard pipeline are the store's own (store/writer.py).

Every pair is stored; a classifier (the "filter") scores both images and the manifest records which
pairs it keeps, so a student can be trained with and without the filter from one set.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distilgan.errors import UserError
from distilgan.store.format import FORMAT_NAME, MANIFEST, plan_shards
from distilgan.store.writer import _RESUME_KEYS as _STORE_RESUME_KEYS
from distilgan.utils.noise import balanced_labels

PAIRS_FORMAT = "distilgan-pairs"
PAIRS_FORMAT_VERSION = 1
# zip members in file order (byte-stable shards need a fixed order)
PAIR_ARRAYS = ("z", "edits", "source_labels", "target_labels", "sources", "targets", "source_scores", "target_scores")
# The most accurate shipped classifier (81.2 %). Deliberately not the ResNet-56 that judges evaluation
# (flip rate): a filter that is also the judge would pass exactly the pairs the judge likes.
DEFAULT_FILTER = "cifar10-vgg11_bn_x0_25"

# manifest key -> how to name it to the user: every setting a resumed run must share; the store's
# (teacher, seed, truncation, sizes, device) with edits in place of classes, and the filter's weights
_RESUME_KEYS = {
    **{key: label for key, label in _STORE_RESUME_KEYS.items() if key not in ("per_class", "classes")},
    "format_version": "pair set format version", "per_edit": "--per-edit", "edits": "--edit list",
    "filter.fingerprint": "--filter-model (classifier weights)",
}


# ----------------------------------------------------------------------------- format


def load_pairs_manifest(folder: str | os.PathLike, fix: str = "give a folder made by distilgan pairs") -> dict[str, Any]:
    """The manifest of a pair set; one-line UserError for a missing folder, a missing, unreadable or
    foreign manifest (``fix`` ends the message for a distillation set found instead)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"pair set not found: {folder} (make one with distilgan pairs)")
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"no {MANIFEST} in {folder} (not a pair set; make one with distilgan pairs)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad UTF-8 or JSON
        raise UserError(f"unreadable {path}: {err} (rerun distilgan pairs with --overwrite)") from None
    kind = manifest.get("format") if isinstance(manifest, dict) else None
    if kind == FORMAT_NAME:
        raise UserError(f"{folder} holds a distillation set (distilgan sample), not a pair set ({fix})")
    if kind != PAIRS_FORMAT:
        raise UserError(f"{path} is not a distilgan pair set manifest (rerun distilgan pairs with --overwrite)")
    if manifest.get("format_version") != PAIRS_FORMAT_VERSION:
        raise UserError(f"{path} has pair set format {manifest.get('format_version')}, this distilgan reads "
                        f"{PAIRS_FORMAT_VERSION} (remake the set with this version)")
    return manifest


def parse_edits(specs: Sequence[str], class_names: Sequence[str] | None, num_classes: int) -> list[dict[str, Any]]:
    """``["automobile:truck", "1:9"]`` (names in any case, or indices) -> ``[{"name", "source", "target"}]``.

    One-line UserError for a missing colon, an unknown class, the same source and target, or an edit
    given twice. Names use the teacher's class names (indices when it has none).
    """
    from distilgan.utils.labels import resolve_labels

    if not specs:
        raise UserError("no --edit given (add e.g. --edit automobile:truck)")
    names = [str(n) for n in class_names] if class_names else [str(i) for i in range(num_classes)]
    edits: list[dict[str, Any]] = []
    for spec in specs:
        parts = str(spec).split(":")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise UserError(f"--edit '{spec}' is not SOURCE:TARGET (e.g. --edit {names[0]}:{names[-1]})")
        try:
            source, target = (int(c) for c in resolve_labels(parts, class_names, num_classes, strict=False,
                                                             owner="the teacher's"))
        except UserError as err:
            raise UserError(f"--edit '{spec}': {err}") from None
        if source == target:
            raise UserError(f"--edit '{spec}' has the same source and target class (an edit changes the class)")
        name = f"{names[source]}:{names[target]}"
        if any(edit["name"] == name for edit in edits):
            raise UserError(f"--edit {name} is given twice (list each edit once)")
        edits.append({"name": name, "source": source, "target": target})
    return edits


def edit_index(start: int, stop: int, num_edits: int) -> np.ndarray:
    """Edit of every global pair index in [start, stop): ``i % num_edits`` (interleaved, like the store's labels)."""
    return balanced_labels(start, stop, range(num_edits))


def kept_of(source_scores: np.ndarray, target_scores: np.ndarray, min_confidence: float, filtered: bool) -> np.ndarray:
    """Which pairs the filter keeps: both images recognised as their class with >= ``min_confidence``.

    A set made without a filter has no scores (NaN): every pair is kept.
    """
    if not filtered:
        return np.ones(len(source_scores), dtype=bool)
    return np.minimum(source_scores, target_scores) >= min_confidence


def filter_summary(manifest: dict[str, Any], shards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``filter`` block: the settings plus kept counts summed over ``shards`` (entries)."""
    edits = manifest["edits"]
    kept = {edit["name"]: 0 for edit in edits}
    total = {edit["name"]: 0 for edit in edits}
    for entry in shards:
        counts = np.bincount(edit_index(int(entry["start"]), int(entry["start"]) + int(entry["count"]), len(edits)),
                             minlength=len(edits))
        for edit, count in zip(edits, counts):
            total[edit["name"]] += int(count)
            kept[edit["name"]] += int(entry["kept_per_edit"][edit["name"]])
    all_kept, all_total = sum(kept.values()), sum(total.values())
    base = {key: manifest["filter"][key] for key in ("classifier", "fingerprint", "min_confidence")}
    return {**base, "kept": all_kept, "total": all_total, "kept_fraction": all_kept / all_total if all_total else 0.0,
            "kept_per_edit": {name: {"kept": kept[name], "total": total[name],
                                     "fraction": kept[name] / total[name] if total[name] else 0.0} for name in kept}}


def _kept_entry(arrays: dict[str, np.ndarray], edits: list[dict[str, Any]], min_confidence: float,
                filtered: bool) -> dict[str, Any]:
    """A shard entry's ``kept`` and ``kept_per_edit`` from its arrays."""
    mask = kept_of(arrays["source_scores"], arrays["target_scores"], min_confidence, filtered)
    per_edit = np.bincount(arrays["edits"][mask], minlength=len(edits))
    return {"kept": int(mask.sum()), "kept_per_edit": {e["name"]: int(n) for e, n in zip(edits, per_edit)}}


# ----------------------------------------------------------------------------- filter


def load_filter(spec: str | os.PathLike | None, teacher: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """(classifier or None, the manifest's filter settings) for ``--filter-model`` (None: no filter)."""
    if spec is None:
        return None, {"classifier": None, "fingerprint": None}
    from distilgan.metrics.class_agreement import load_judge
    from distilgan.teachers.adapter import module_fingerprint

    try:
        model, name = load_judge(spec, device=device)
    except UserError as err:
        raise UserError(f"--filter-model: {err}") from None
    fix = "give --filter-model a classifier of the teacher's classes and resolution, or --no-filter"
    if (model.resolution, model.num_classes, model.channels) != (teacher.resolution, teacher.num_classes, teacher.channels):
        raise UserError(f"--filter-model {name} takes {model.resolution}x{model.resolution}x{model.channels} images "
                        f"of {model.num_classes} classes, the teacher makes {teacher.resolution}x{teacher.resolution}"
                        f"x{teacher.channels} images of {teacher.num_classes} classes ({fix})")
    if teacher.class_names:  # same count, other classes: the scores would be of the wrong class
        for ours, theirs in zip(teacher.class_names, model.class_names):
            if str(ours).lower() != str(theirs).lower():
                raise UserError(f"--filter-model {name} has class '{theirs}' where the teacher has '{ours}' ({fix})")
    model.eval()
    return model, {"classifier": name, "fingerprint": module_fingerprint(model)}


def _scores(model: Any, images: np.ndarray, labels: np.ndarray, batch_size: int) -> np.ndarray:
    """The filter's softmax probability of ``labels`` on ``images``; NaN without a filter."""
    if model is None:
        return np.full(len(labels), np.nan, dtype=np.float32)
    from distilgan.metrics.class_agreement import judge_probs

    probs = judge_probs(model, images, batch_size=batch_size)
    return probs[np.arange(len(labels)), labels].astype(np.float32)


# ----------------------------------------------------------------------------- writer


def _rekept(out_dir: Path, done: dict[int, dict[str, Any]], edits: list[dict[str, Any]], min_confidence: float,
            filtered: bool) -> None:
    """Recount the kept pairs of resumed shards under this run's threshold (a rerun may change
    --min-confidence: the shards' bytes do not depend on it, the counts do)."""
    for entry in done.values():
        with np.load(out_dir / entry["file"], allow_pickle=False) as data:  # reads only these members
            arrays = {key: data[key] for key in ("edits", "source_scores", "target_scores")}
        entry.update(_kept_entry(arrays, edits, min_confidence, filtered))


def write_pairs(
    teacher: Any,
    out_dir: str | os.PathLike,
    edits: Sequence[str] | Sequence[dict[str, Any]],
    per_edit: int,
    seed: int = 0,
    shard_size: int = 10000,
    batch_size: int = 256,
    truncation: float | None = None,
    truncation_kind: str = "truncated",
    device: str = "cpu",
    filter_model: str | os.PathLike | None = DEFAULT_FILTER,
    min_confidence: float = 0.5,
    progress: bool = True,
    overwrite: bool = False,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``per_edit`` pairs ``(G(z, source), G(z, target))`` of each edit into a pair set at ``out_dir``.

    ``edits``: specs (``"automobile:truck"``, ``"1:9"``) or ``parse_edits`` dicts. ``filter_model``: a
    classifier spec ``load_judge`` takes, scoring each shard right after it is generated (None: no
    filter, NaN scores, every pair kept); a pair is kept when both scores are >= ``min_confidence``.
    Resumes a killed run with the same arguments (finished shards are checksum-checked and kept; a
    changed ``min_confidence`` only recounts); refuses a folder holding a set made with other arguments
    unless ``overwrite``. Returns the final manifest; ``stats`` gets ``written`` / ``resumed`` pair counts.
    """
    from distilgan.store import writer as w

    w._check_run_args(((per_edit, "--per-edit"), (shard_size, "--shard-size"), (batch_size, "--batch-size")), seed)
    if not (isinstance(min_confidence, (int, float)) and math.isfinite(min_confidence) and min_confidence >= 0):
        raise UserError(f"--min-confidence must be a number >= 0, got {min_confidence}")
    specs = [e if isinstance(e, str) else f"{int(e['source'])}:{int(e['target'])}" for e in edits]
    edit_list = parse_edits(specs, teacher.class_names, teacher.num_classes)
    truncation, z_distribution = w._resolve_truncation(teacher, truncation, truncation_kind)
    total = int(per_edit) * len(edit_list)
    model, filter_settings = load_filter(filter_model, teacher, device)
    threshold = float(min_confidence) if model is not None else 0.0  # no filter keeps all, as threshold 0 does
    settings = {
        **w._teacher_settings(teacher, total, seed, shard_size, batch_size, truncation, device, truncation_kind,
                              PAIRS_FORMAT, PAIRS_FORMAT_VERSION),
        "edits": edit_list, "per_edit": int(per_edit),
        "filter": {**filter_settings, "min_confidence": threshold},
        "pair_order": "interleaved: edit of global pair index i = edits[i % len(edits)]",
        "scores": "filter softmax of the source class on sources, of the target class on targets; NaN without filter",
    }
    sources_of = np.array([e["source"] for e in edit_list], dtype=np.int64)
    targets_of = np.array([e["target"] for e in edit_list], dtype=np.int64)
    probe = edit_index(0, min(2, total), len(edit_list))
    w._probe_teacher(teacher, w._shard_z(seed, 0, len(probe), teacher.z_dim, z_distribution), sources_of[probe])

    def manifest_of(done: dict[int, dict[str, Any]]) -> dict[str, Any]:
        manifest = w._manifest(settings, done)
        return {**manifest, "filter": filter_summary(manifest, manifest["shards"])}

    out_dir = Path(out_dir)
    w._prepare_folder(out_dir, overwrite, what="pair set")
    with w._exclusive(out_dir, command="pairs"):
        done = w._resume_state(out_dir, settings, overwrite, keys=_RESUME_KEYS,
                               load=lambda folder: load_pairs_manifest(folder, "use a new --out or add --overwrite"))
        _rekept(out_dir, done, edit_list, threshold, model is not None)
        plan = [s for s in plan_shards(int(per_edit), edit_list, int(shard_size)) if s[0] not in done]
        if stats is not None:
            stats.update(resumed=sum(e["count"] for e in done.values()), written=sum(s[2] for s in plan))

        def produce(index: int, start: int, count: int,
                    quantizer: concurrent.futures.Executor) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            z = w._shard_z(int(seed), index, count, teacher.z_dim, z_distribution)
            which = edit_index(start, start + count, len(edit_list))
            arrays: dict[str, np.ndarray] = {"z": z, "edits": which, "source_labels": sources_of[which],
                                             "target_labels": targets_of[which]}
            for side, labels in (("sources", arrays["source_labels"]), ("targets", arrays["target_labels"])):
                arrays[side] = np.empty((count, teacher.resolution, teacher.resolution, teacher.channels), np.uint8)
                w._sample_shard(teacher, z, labels, arrays[side], int(batch_size), quantizer, bar)
            arrays["source_scores"] = _scores(model, arrays["sources"], arrays["source_labels"], int(batch_size))
            arrays["target_scores"] = _scores(model, arrays["targets"], arrays["target_labels"], int(batch_size))
            arrays = {key: arrays[key] for key in PAIR_ARRAYS}
            return arrays, _kept_entry(arrays, edit_list, threshold, model is not None)

        def saved(entry: dict[str, Any]) -> None:
            done[entry["index"]] = entry
            w._write_manifest(out_dir, manifest_of(done))

        from distilgan.utils.progress import progress_bar

        already = sum(entry["count"] for entry in done.values())
        # counted in images (two a pair): the bar moves while sources and while targets are made
        with progress_bar(total=2 * total, initial=2 * already, unit="img", unit_scale=total >= 5000,
                          disable=not progress or not plan, desc=f"pairs {out_dir.name}", dynamic_ncols=True) as bar:
            w._write_shards(out_dir, plan, produce, saved)
        w._write_manifest(out_dir, manifest_of(done))  # also when nothing was left to write: the recount
    return manifest_of(done)
