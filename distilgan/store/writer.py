"""The distillation-set store: teacher samples written as checksummed npz shards + a manifest.

A set is a folder (format in docs/store.md)::

    manifest.json          what made the set (teacher, seed, counts, ...) and one entry per shard
    shard-00000.npz        z float32 (n, z_dim), labels int64 (n,), images uint8 (n, H, W, C)
    shard-00001.npz ...

Everything in a shard follows from (seed, shard index, teacher, device): z comes from
``ZDistribution.sample(rng(seed, k), ...)`` (the manifest's ``z_distribution``) and labels from
``balanced_labels`` over global indices, so a killed run resumes shard by shard and any shard can be
regenerated alone, bit for bit.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from distilgan import __version__
from distilgan.store.format import (ENTRY_PREFIX, FORMAT_NAME, FORMAT_VERSION, LOCK, MANIFEST, class_counts,
                                    clear_entries, load_manifest, plan_shards, read_entries, resolve_classes,
                                    shard_name, write_npz)
from distilgan.errors import UserError
from distilgan.teachers.base import check_not_flat
from distilgan.utils.atomic import atomic_path
from distilgan.utils.hashing import sha256_file
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
from distilgan.utils.latent import TRUNCATION_KINDS
from distilgan.utils.noise import ZDistribution, balanced_labels, rng


def _teacher_settings(teacher: Any, total: int, seed: int, shard_size: int, batch_size: int,
                      truncation: float | None, device: str, truncation_kind: str,
                      format_name: str, format_version: int) -> dict[str, Any]:
    """The header keys every shard set shares (a store, a pair set): the teacher, z and the shard plan."""
    return {
        "format": format_name, "format_version": format_version, "tool_version": __version__,
        "teacher": teacher.describe(), "z_dim": int(teacher.z_dim), "num_classes": int(teacher.num_classes),
        "class_names": list(teacher.class_names) if teacher.class_names else None,
        "resolution": int(teacher.resolution), "channels": int(teacher.channels),
        "image_size": [int(teacher.resolution), int(teacher.resolution), int(teacher.channels)],
        "z_distribution": _z_distribution(teacher, truncation, truncation_kind).to_dict(),
        "truncation": None if truncation is None else float(truncation), "seed": int(seed), "total": int(total),
        "z_stream": "shard k: ZDistribution.from_dict(z_distribution).sample(rng(seed, k), count, z_dim)",
        "quantization": "uint8 = clip(rint((x + 1) * 127.5), 0, 255), round half to even",
        "shard_size": int(shard_size), "num_shards": math.ceil(total / shard_size),
        "batch_size": int(batch_size), "device": str(device),
    }


def _settings(teacher: Any, per_class: int, classes: list[int], seed: int, shard_size: int,
              batch_size: int, truncation: float | None, device: str, truncation_kind: str = "truncated") -> dict[str, Any]:
    """The manifest's header: everything that decides the bytes of the shards."""
    total = per_class * len(classes)
    return {
        **_teacher_settings(teacher, total, seed, shard_size, batch_size, truncation, device, truncation_kind,
                            FORMAT_NAME, FORMAT_VERSION),
        "classes": classes,
        "per_class": int(per_class),
        "counts_per_class": {str(c): int(per_class) for c in classes},
        "label_order": "interleaved: label of global index i = classes[i % len(classes)]",
    }


# manifest key -> how to name it to the user, for every setting a resumed run must share
_RESUME_KEYS = {
    "teacher.fingerprint": "teacher weights (fingerprint)", "teacher.output_range": "--output-range",
    "teacher.z_dim": "teacher z_dim", "teacher.num_classes": "teacher number of classes",
    "teacher.resolution": "teacher resolution", "teacher.channels": "teacher channels",
    "teacher.native_truncation": "teacher truncation mode", "format_version": "store format version",
    "seed": "--seed", "per_class": "--per-class", "classes": "--classes", "truncation": "--truncation",
    "shard_size": "--shard-size", "batch_size": "--batch-size", "device": "--device",
    "z_distribution": "--truncation-kind",
}


def _z_distribution(teacher: Any, truncation: float | None, kind: str) -> ZDistribution:
    """z of the shards: normal for teachers that truncate themselves (StyleGAN psi), else ``kind`` at t."""
    if kind not in TRUNCATION_KINDS:
        raise UserError(f"unknown --truncation-kind '{kind}' (choose from {', '.join(TRUNCATION_KINDS)})")
    if teacher.native_truncation or truncation is None:
        return ZDistribution()
    return ZDistribution(kind, float(truncation))


def _lookup(manifest: dict[str, Any], key: str) -> Any:
    value: Any = manifest
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if key == "z_distribution":  # stores before the named kinds wrote "truncated_normal": the same numbers
        try:
            return ZDistribution.from_dict(value).to_dict()
        except (TypeError, ValueError, AttributeError):
            return value
    return value


def _check_same_settings(old: dict[str, Any], new: dict[str, Any], out_dir: Path,
                         keys: dict[str, str] | None = None) -> None:
    """Refuse (one line) when ``old`` and ``new`` differ in one of ``keys`` (manifest key -> option name)."""
    for key, label in (_RESUME_KEYS if keys is None else keys).items():
        before, now = _lookup(old, key), _lookup(new, key)
        if json.loads(json.dumps(before)) != json.loads(json.dumps(now)):
            before, now = (v[:12] + "..." if isinstance(v, str) and len(v) > 16 else v for v in (before, now))
            raise UserError(
                f"{out_dir} holds a set made with a different {label} ({before} there, {now} now); "
                "use a new --out or add --overwrite"
            )


# ----------------------------------------------------------------------------- writer


def _is_ours(name: str) -> bool:
    return (name in (MANIFEST, LOCK) or name.startswith((".tmp-", ENTRY_PREFIX))
            or (name.startswith("shard-") and name.endswith(".npz")))


def _prepare_folder(out_dir: Path, overwrite: bool, what: str = "distillation set") -> None:
    """Create ``out_dir`` (or fail with one line) and prove we can write into it; ``what`` names the set kind."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path {out_dir} is a file (give a folder to --out)")
    if out_dir.is_dir() and not overwrite and not (out_dir / MANIFEST).exists():
        foreign = sorted(p.name for p in out_dir.iterdir() if not _is_ours(p.name))
        if foreign:
            raise UserError(
                f"output folder {out_dir} is not empty and holds no {what} (e.g. {foreign[0]}); "
                "use a new --out or add --overwrite"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(prefix=".tmp-write-test-", dir=out_dir) as probe:
            probe.write(b"ok")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"cannot write to output folder {out_dir}: {reason} (choose a writable --out)") from None


@contextlib.contextmanager
def _exclusive(out_dir: Path, command: str = "sample") -> Iterator[None]:
    """One writer per set: a second concurrent ``sample`` (or ``command``) into the same folder fails cleanly."""
    with open(out_dir / LOCK, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"another distilgan {command} is writing {out_dir} (wait for it or choose another --out)") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _resume_state(out_dir: Path, settings: dict[str, Any], overwrite: bool,
                  load: Callable[[Path], dict[str, Any]] = load_manifest,
                  keys: dict[str, str] | None = None) -> dict[int, dict[str, Any]]:
    """Clean the folder for this run; return the finished, checksum-valid shard entries by index.

    ``load`` reads (and checks the format of) the old manifest, ``keys`` are the settings a resumed
    run must share: a pair set (store/pairs_writer.py) passes its own."""
    for stale in out_dir.glob(".tmp-*"):  # a killed run's half-written file
        stale.unlink(missing_ok=True)
    names = {p.name for p in out_dir.iterdir()}
    if overwrite:
        for name in names:
            if name == MANIFEST or name.startswith(ENTRY_PREFIX) or (name.startswith("shard-") and name.endswith(".npz")):
                (out_dir / name).unlink()
        return {}
    # killed before the first manifest: only shards with a DDP rank's entry file are kept, any other is regenerated
    listed = []
    if MANIFEST in names:
        old = load(out_dir)
        _check_same_settings(old, settings, out_dir, keys)
        listed = list(old.get("shards", []))
    done: dict[int, dict[str, Any]] = {}
    entries = read_entries(out_dir)
    for old_settings, _ in entries:
        _check_same_settings(old_settings, settings, out_dir, keys)
    for entry in listed + [entry for _, entry in entries]:
        if int(entry["index"]) in done:
            continue
        path = out_dir / entry["file"]
        if path.is_file() and sha256_file(path) == entry["sha256"]:
            done[int(entry["index"])] = entry
    return done


def _manifest(settings: dict[str, Any], done: dict[int, dict[str, Any]]) -> dict[str, Any]:
    shards = [done[k] for k in sorted(done)]
    return {**settings, "complete": len(shards) == settings["num_shards"], "shards": shards}


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _shard_z(seed: int, index: int, count: int, z_dim: int, distribution: ZDistribution) -> np.ndarray:
    # "truncated" is sample_z(rng(seed, k), count, z_dim, t): the numbers of every store made before
    return distribution.sample(rng(seed, index), count, z_dim)


def _quantize_into(images: np.ndarray, a: int, b: int, batch: np.ndarray, teacher: Any) -> None:
    # generate() refused pixels outside the declared range; a flat batch (constant teacher, or a
    # declared range far wider than the output) is refused here, off the teacher's thread
    check_not_flat(batch, getattr(teacher, "output_range", (-1.0, 1.0)), getattr(teacher, "spec", ""))
    images[a:b] = nchw_to_nhwc(float_to_uint8(batch))


def _sample_shard(teacher: Any, z: np.ndarray, labels: np.ndarray, images: np.ndarray, batch_size: int,
                  quantizer: concurrent.futures.Executor, bar: Any) -> None:
    """Fill ``images`` batch by batch: the teacher runs here while ``quantizer`` (a second thread;
    numpy releases the GIL) turns the previous batches into uint8, at most 3 float batches alive."""
    inflight: collections.deque[concurrent.futures.Future] = collections.deque()
    try:
        for a in range(0, len(z), batch_size):
            b = min(a + batch_size, len(z))
            # Copied because the teacher may hand back a buffer it reuses on its next call.
            batch = np.array(teacher.generate(z[a:b], labels[a:b]), dtype=np.float32, copy=True)
            inflight.append(quantizer.submit(_quantize_into, images, a, b, batch, teacher))
            while len(inflight) > 2:
                inflight.popleft().result()
            bar.update(b - a)
        while inflight:
            inflight.popleft().result()
    finally:
        for future in inflight:
            future.cancel()


def _check_run_args(counts: Sequence[tuple[Any, str]], seed: Any) -> None:
    """One line for a count (``(value, flag)`` pairs) below 1 or a negative seed: Python callers skip argparse."""
    for value, flag in counts:
        if int(value) != value or value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value}")
    if int(seed) != seed or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed}")


def _resolve_truncation(teacher: Any, truncation: float | None,
                        truncation_kind: str) -> tuple[float | None, ZDistribution]:
    """(the truncation in effect, z's distribution); hands it to a teacher that truncates itself."""
    if truncation is None:
        truncation = getattr(teacher, "truncation", None)
    if truncation is not None and not truncation > 0:
        raise UserError(f"--truncation must be > 0, got {truncation}")
    if teacher.native_truncation and truncation_kind != "truncated":
        raise UserError(f"--truncation-kind {truncation_kind} shapes z, but this teacher applies --truncation itself "
                        "(StyleGAN psi) to a normal z; drop --truncation-kind")
    if teacher.native_truncation:
        teacher.truncation = truncation  # the adapter truncates (e.g. StyleGAN psi); z stays N(0, I)
    return truncation, _z_distribution(teacher, truncation, truncation_kind)


def _probe_teacher(teacher: Any, z: np.ndarray, labels: np.ndarray) -> None:
    """Try the teacher on a couple of samples before touching the folder, so a broken teacher (wrong
    shape, range, or a flat output) fails with its own message and an --overwrite does not delete a good set."""
    check_not_flat(teacher.generate(z, labels), getattr(teacher, "output_range", (-1.0, 1.0)),
                   getattr(teacher, "spec", ""))


def _prepare(teacher: Any, per_class: int, classes: Sequence[int | str] | None, seed: int, shard_size: int,
             batch_size: int, truncation: float | None, device: str,
             truncation_kind: str) -> tuple[dict[str, Any], list[int], ZDistribution]:
    """Check the arguments, try the teacher, and return (manifest header, class list, z distribution)."""
    _check_run_args(((per_class, "--per-class"), (shard_size, "--shard-size"), (batch_size, "--batch-size")), seed)
    truncation, z_distribution = _resolve_truncation(teacher, truncation, truncation_kind)
    class_list = resolve_classes(classes, teacher.num_classes, teacher.class_names)
    settings = _settings(teacher, int(per_class), class_list, int(seed), int(shard_size), int(batch_size),
                         truncation, device, truncation_kind)
    probe = min(2, settings["total"])
    _probe_teacher(teacher, _shard_z(seed, 0, probe, teacher.z_dim, z_distribution), balanced_labels(0, probe, class_list))
    return settings, class_list, z_distribution


# produce(index, start, count, quantizer) -> (the shard's arrays in file order, extra manifest-entry keys)
ShardProducer = Callable[[int, int, int, concurrent.futures.Executor], tuple[dict[str, np.ndarray], dict[str, Any]]]


def _write_shards(out_dir: Path, plan: list[tuple[int, int, int]], produce: ShardProducer,
                  saved: Callable[[dict[str, Any]], None]) -> None:
    """Make (``produce``, in this thread) and save the shards of ``plan``; a second thread saves shard k
    while shard k+1 is made, a third is the quantiser ``produce`` may use. ``saved(entry)`` runs (in the
    writer thread) after each shard file is in place, to record it (the manifest, or a DDP rank's entry file)."""

    def save(index: int, start: int, count: int, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        # Runs in the writer thread; the only code that touches the folder.
        path = out_dir / shard_name(index)
        try:
            with atomic_path(path) as tmp:
                write_npz(tmp, arrays)
                digest, size = sha256_file(tmp), tmp.stat().st_size
            saved({"file": path.name, "index": index, "start": start, "count": int(count),
                   "sha256": digest, "bytes": size, **extra})
        except OSError as err:
            raise UserError(f"cannot write {path}: {err.strerror or err} (free disk space or choose another --out)") from None

    writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
    quantizer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-quantize")
    pending: concurrent.futures.Future | None = None
    try:
        for index, start, count in plan:
            arrays, extra = produce(index, start, count, quantizer)
            if pending is not None:
                pending.result()  # raise a writer error here; also keeps <= 2 shards in memory
            pending = writer.submit(save, index, start, count, arrays, extra)
        if pending is not None:
            pending.result()
    finally:
        # On an error or Ctrl-C, let the writer finish the shard it holds (it is complete).
        quantizer.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)


def _sample_plan(teacher: Any, out_dir: Path, plan: list[tuple[int, int, int]], settings: dict[str, Any],
                 class_list: list[int], z_distribution: ZDistribution, bar: Any,
                 saved: Callable[[dict[str, Any]], None]) -> None:
    """Sample and write the shards of ``plan`` (see ``_write_shards`` for ``saved``)."""
    seed, batch_size = int(settings["seed"]), int(settings["batch_size"])

    def produce(index: int, start: int, count: int,
                quantizer: concurrent.futures.Executor) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        z = _shard_z(seed, index, count, teacher.z_dim, z_distribution)
        labels = balanced_labels(start, start + count, class_list)
        images = np.empty((count, teacher.resolution, teacher.resolution, teacher.channels), dtype=np.uint8)
        _sample_shard(teacher, z, labels, images, batch_size, quantizer, bar)
        return {"z": z, "labels": labels, "images": images}, {"counts_per_class": class_counts(labels, class_list)}

    _write_shards(out_dir, plan, produce, saved)


def write_store(
    teacher: Any,
    out_dir: str | os.PathLike,
    per_class: int,
    classes: Sequence[int | str] | None = None,
    seed: int = 0,
    shard_size: int = 10000,
    batch_size: int = 256,
    truncation: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    stats: dict[str, Any] | None = None,
    truncation_kind: str = "truncated",
    dist: Any = None,
) -> dict[str, Any]:
    """Sample ``per_class`` images of each class from ``teacher`` into a store at ``out_dir``.

    Resumes a killed run with the same arguments (finished shards are checksum-checked and kept);
    refuses a folder holding a set made with other arguments unless ``overwrite``. Returns the
    final manifest; ``stats``, when given, gets ``written`` / ``resumed`` sample counts.
    ``truncation_kind`` is how ``truncation`` shapes z (``truncated``: |z| > t redrawn, the BigGAN
    paper's; ``scaled-truncnorm``: t * truncnorm(-2, 2), TF-hub BigGAN's); the manifest's
    ``z_distribution`` records it for the student. The teacher
    runs in this thread, a second thread quantises its batches and a third saves the previous shard,
    so at most two shards are in memory. With a distributed ``dist`` (a DistContext of several ranks)
    the shards are split over the ranks (``store/distributed.py``); the bytes are the same.
    """
    settings, class_list, z_distribution = _prepare(teacher, per_class, classes, seed, shard_size, batch_size,
                                                    truncation, device, truncation_kind)
    out_dir = Path(out_dir)
    if dist is not None and dist.distributed:
        from distilgan.store.distributed import write_store_ranks

        return write_store_ranks(teacher, out_dir, settings, class_list, z_distribution, dist, progress, overwrite, stats)
    _prepare_folder(out_dir, overwrite)
    with _exclusive(out_dir):
        done = _resume_state(out_dir, settings, overwrite)
        plan = [shard for shard in plan_shards(int(per_class), class_list, int(shard_size)) if shard[0] not in done]
        if stats is not None:
            stats.update(resumed=sum(entry["count"] for entry in done.values()), written=sum(s[2] for s in plan))

        def saved(entry: dict[str, Any]) -> None:
            done[entry["index"]] = entry
            _write_manifest(out_dir, _manifest(settings, done))

        if plan:
            from distilgan.utils.progress import progress_bar

            total = settings["total"]
            already = sum(entry["count"] for entry in done.values())
            with progress_bar(total=total, initial=already, unit="img", unit_scale=total >= 10000, disable=not progress,
                              desc=f"sampling {out_dir.name}", dynamic_ncols=True) as bar:
                _sample_plan(teacher, out_dir, plan, settings, class_list, z_distribution, bar, saved)
        else:
            _write_manifest(out_dir, _manifest(settings, done))
        clear_entries(out_dir)  # a DDP run's per-shard entries are in the manifest now
    return _manifest(settings, done)
