"""The distillation-set store API: writer, resume, verify, reader and the streaming dataset."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from distilgan.store import (
    DistillationStore,
    read_npz,
    resolve_classes,
    shard_name,
    verify_store,
    write_store,
)
from distilgan.errors import UserError
from distilgan.teachers.base import Teacher
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
from distilgan.utils.noise import balanced_labels, rng, sample_z


class FormulaTeacher(Teacher):
    """Images computed from z and the label, so any stored sample can be checked by recomputing it."""

    spec = "test:formula"

    def __init__(self, z_dim: int = 6, num_classes: int = 4, resolution: int = 4, version: str = "v1",
                 native_truncation: bool = False) -> None:
        self.z_dim, self.num_classes, self.resolution, self.channels = z_dim, num_classes, resolution, 3
        self.class_names = ["cat", "dog", "emu", "fox"][:num_classes]
        self.version = version
        self.native_truncation = native_truncation
        self.truncation = None
        self.calls = 0

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        self.calls += 1
        pixels = 0.5 * np.tanh(z[:, :3]) + 0.1 * labels[:, None] - 0.15  # (N, 3) within [-0.8, 0.8]
        if self.native_truncation and self.truncation is not None:
            pixels = pixels * min(1.0, self.truncation)
        grid = np.linspace(0.0, 0.1, self.resolution * self.resolution, dtype=np.float32)
        image = pixels[:, :, None] + grid[None, None, :]
        return image.reshape(len(z), 3, self.resolution, self.resolution).astype(np.float32)

    def fingerprint(self) -> str:
        return f"formula-{self.version}"


def expected_images(teacher: FormulaTeacher, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return nchw_to_nhwc(float_to_uint8(teacher.generate(z, labels)))


def make_set(path: Path, **kwargs) -> dict:
    args = dict(per_class=5, classes=None, seed=3, shard_size=4, batch_size=3, progress=False)
    args.update(kwargs)
    teacher = args.pop("teacher", None) or FormulaTeacher()
    return write_store(teacher, path, **args)


def shard_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("shard-*.npz"))}


# ----------------------------------------------------------------------------- writing


def test_write_roundtrip_contents(tmp_path: Path) -> None:
    manifest = make_set(tmp_path / "set", classes=[1, 3, 0])
    assert manifest["complete"] and manifest["total"] == 15 and manifest["num_shards"] == 4
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 4, 3]  # last partial shard kept
    assert manifest["counts_per_class"] == {"1": 5, "3": 5, "0": 5}
    assert manifest["z_distribution"] == {"kind": "normal"}
    assert manifest["teacher"]["fingerprint"] == "formula-v1"
    on_disk = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert on_disk == manifest

    teacher = FormulaTeacher()
    for entry in manifest["shards"]:
        arrays = read_npz(tmp_path / "set" / entry["file"])
        k, start, n = entry["index"], entry["start"], entry["count"]
        assert arrays["z"].dtype == np.float32 and arrays["labels"].dtype == np.int64
        assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (n, 4, 4, 3)
        np.testing.assert_array_equal(arrays["z"], sample_z(rng(3, k), n, 6))  # any shard regenerates alone
        np.testing.assert_array_equal(arrays["labels"], balanced_labels(start, start + n, [1, 3, 0]))
        np.testing.assert_array_equal(arrays["images"], expected_images(teacher, arrays["z"], arrays["labels"]))
        assert sum(entry["counts_per_class"].values()) == n

    store = DistillationStore.open(tmp_path / "set")
    assert (store.num_samples, store.num_shards, store.z_dim, store.num_classes) == (15, 4, 6, 4)
    assert (store.resolution, store.channels, store.class_names) == (4, 3, ["cat", "dog", "emu", "fox"])
    z, labels, images = store.load_all()
    assert z.shape == (15, 6) and images.shape == (15, 4, 4, 3)
    assert np.bincount(labels, minlength=4).tolist() == [5, 5, 0, 5]
    np.testing.assert_array_equal(store.read_shard(3)[1], labels[12:])
    assert verify_store(tmp_path / "set") == []


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    make_set(tmp_path / "a")
    make_set(tmp_path / "b")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    different_seed = make_set(tmp_path / "c", seed=4)
    assert shard_bytes(tmp_path / "c") != shard_bytes(tmp_path / "a")
    assert different_seed["total"] == 20


def test_truncation_of_z_and_native_truncation(tmp_path: Path) -> None:
    manifest = make_set(tmp_path / "t", truncation=0.5)
    assert manifest["z_distribution"] == {"kind": "truncated", "threshold": 0.5}  # ZDistribution.to_dict()
    z, _, _ = DistillationStore.open(tmp_path / "t").load_all()
    assert np.abs(z).max() <= 0.5
    np.testing.assert_array_equal(z[:4], sample_z(rng(3, 0), 4, 6, 0.5))

    native = FormulaTeacher(native_truncation=True)
    manifest = make_set(tmp_path / "n", truncation=0.5, teacher=native)
    assert manifest["z_distribution"] == {"kind": "normal"} and manifest["truncation"] == 0.5
    assert native.truncation == 0.5  # handed to the teacher, which applies it itself
    z, _, _ = DistillationStore.open(tmp_path / "n").load_all()
    np.testing.assert_array_equal(z[:4], sample_z(rng(3, 0), 4, 6))


def test_resume_keeps_finished_shards_and_redoes_bad_ones(tmp_path: Path) -> None:
    make_set(tmp_path / "ref")
    reference = shard_bytes(tmp_path / "ref")
    out = tmp_path / "set"
    make_set(out)
    manifest = json.loads((out / "manifest.json").read_text())
    # Simulate a run killed while writing shard 2: the manifest lists shards 0-1 only, shard 2 was
    # renamed but not recorded, shard 3 is gone, a half-written temp file is left; then damage shard 1.
    manifest["shards"] = manifest["shards"][:2]
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / shard_name(3)).unlink()
    (out / shard_name(2)).write_bytes(b"half")
    (out / ".tmp-shard-00003.npz-abc").write_bytes(b"partial")
    damaged = bytearray((out / shard_name(1)).read_bytes())
    damaged[-100] ^= 0xFF
    (out / shard_name(1)).write_bytes(bytes(damaged))
    assert any(shard_name(1) in p and "checksum" in p for p in verify_store(out))

    teacher = FormulaTeacher()
    final = make_set(out, teacher=teacher)
    # 20 samples in 5 shards of 4 (2 teacher calls each at batch size 3): shard 0 kept, shard 1 (bad
    # checksum) and shards 2-4 (not in the manifest) regenerated; plus one 2-sample probe call.
    assert teacher.calls == 1 + 4 * 2
    assert final["complete"] and verify_store(out) == []
    assert shard_bytes(out) == reference
    assert not list(out.glob(".tmp-*"))

    teacher = FormulaTeacher()
    make_set(out, teacher=teacher)  # a complete set: nothing to do but the probe
    assert teacher.calls == 1


@pytest.mark.parametrize(
    "change, named",
    [
        ({"seed": 4}, "--seed"),
        ({"per_class": 6}, "--per-class"),
        ({"classes": [0, 1]}, "--classes"),
        ({"truncation": 1.5}, "--truncation"),
        ({"shard_size": 5}, "--shard-size"),
        ({"batch_size": 2}, "--batch-size"),
        ({"teacher": FormulaTeacher(version="v2")}, "teacher weights"),
    ],
)
def test_rerun_with_other_arguments_is_refused(tmp_path: Path, change: dict, named: str) -> None:
    make_set(tmp_path / "set")
    before = shard_bytes(tmp_path / "set")
    with pytest.raises(UserError, match="--overwrite") as err:
        make_set(tmp_path / "set", **change)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert shard_bytes(tmp_path / "set") == before  # untouched
    manifest = make_set(tmp_path / "set", overwrite=True, **change)
    assert manifest["complete"] and verify_store(tmp_path / "set") == []


def test_bad_output_folders(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write to output folder"):
        make_set(blocker / "set")
    with pytest.raises(UserError, match="is a file"):
        make_set(blocker)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(UserError, match="not empty"):
        make_set(foreign)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]  # nothing added


def test_teacher_error_leaves_no_set(tmp_path: Path) -> None:
    class Broken(FormulaTeacher):
        def _generate(self, z, labels):
            return np.zeros((len(z), 3, 2, 2), np.float32)

    with pytest.raises(UserError, match="shape"):
        make_set(tmp_path / "set", teacher=Broken())
    assert not (tmp_path / "set").exists()  # checked before the folder is made
    assert make_set(tmp_path / "set")["complete"]
    before = shard_bytes(tmp_path / "set")
    with pytest.raises(UserError, match="shape"):  # not "different teacher", and --overwrite deletes nothing
        make_set(tmp_path / "set", teacher=Broken(), overwrite=True)
    assert shard_bytes(tmp_path / "set") == before

    class FailsLater(FormulaTeacher):
        def _generate(self, z, labels):
            if self.calls >= 3:  # the probe and shard 0's two batches pass, shard 1 fails
                return np.full((len(z), 3, 4, 4), 7.0, np.float32)
            return super()._generate(z, labels)

    with pytest.raises(UserError, match="range"):
        make_set(tmp_path / "later", teacher=FailsLater())
    assert verify_store(tmp_path / "later")[0].startswith("set is incomplete: 1 of 5")  # shard 0 was kept
    assert make_set(tmp_path / "later")["complete"]


def test_teacher_reusing_its_output_buffer(tmp_path: Path) -> None:
    class BufferTeacher(FormulaTeacher):
        """Writes every batch into the same array, as optimised teachers may."""

        def _generate(self, z, labels):
            out = super()._generate(z, labels)
            if not hasattr(self, "buffer") or self.buffer.shape != out.shape:
                self.buffer = np.empty_like(out)
            self.buffer[...] = out
            return self.buffer

    make_set(tmp_path / "buffer", teacher=BufferTeacher(), batch_size=1, per_class=20, shard_size=80)
    make_set(tmp_path / "plain", batch_size=1, per_class=20, shard_size=80)
    a = DistillationStore.open(tmp_path / "buffer").load_all()
    b = DistillationStore.open(tmp_path / "plain").load_all()
    np.testing.assert_array_equal(a[2], b[2])


def test_resolve_classes() -> None:
    names = ["cat", "dog", "emu"]
    assert resolve_classes(None, 3, names) == [0, 1, 2]
    assert resolve_classes(["2", "cat"], 3, names) == [2, 0]
    assert resolve_classes(["DOG"], 3, names) == [1]
    for bad, message in ((["12"], "outside"), (["zebra"], "unknown class 'zebra'"), (["1", "dog"], "twice")):
        with pytest.raises(UserError, match=message):
            resolve_classes(bad, 3, names)


def test_verify_names_each_problem(tmp_path: Path) -> None:
    out = tmp_path / "set"
    make_set(out)
    (out / shard_name(2)).unlink()
    (out / shard_name(0)).write_bytes((out / shard_name(0)).read_bytes()[:-10])
    problems = verify_store(out)
    assert any(p.startswith(shard_name(2)) and "missing" in p for p in problems)
    assert any(p.startswith(shard_name(0)) and "checksum" in p for p in problems)
    assert not any(shard_name(1) in p or shard_name(3) in p for p in problems)
    (out / "manifest.json").write_text("{not json")
    assert "unreadable" in verify_store(out)[0]


# ----------------------------------------------------------------------------- streaming


def _stream_ids(store_dir: Path, real_workers: bool = False, **kwargs) -> list[float]:
    """One rank's epoch with 2 DataLoader workers (real processes, or simulated in this process);
    samples are identified by their z[0]."""
    from distilgan.store import stream as store_stream

    epoch = kwargs.pop("epoch", 0)
    stream = store_stream.StoreStream(store_dir, **kwargs)
    stream.set_epoch(epoch)
    ids: list[float] = []
    if real_workers:
        # Real DataLoader worker processes, in a fresh interpreter: earlier tests in this process start
        # OpenVINO/onnxruntime/uvicorn threads, and a DataLoader started after them can crash pytest.
        import json
        import subprocess
        import sys

        script = (
            "import json, sys, torch\n"
            "from distilgan.store.stream import StoreStream\n"
            "kw = json.loads(sys.argv[2]); epoch = kw.pop('epoch')\n"
            "stream = StoreStream(sys.argv[1], **kw); stream.set_epoch(epoch)\n"
            "ids = []\n"
            "for z, labels, images in torch.utils.data.DataLoader(stream, batch_size=5, num_workers=2):\n"
            "    assert z.dtype == torch.float32 and labels.dtype == torch.int64 and images.dtype == torch.float32\n"
            "    assert images.shape[1:] == (3, 4, 4) and images.min() >= -1 and images.max() <= 1\n"
            "    ids.extend(z[:, 0].tolist())\n"
            "print(json.dumps(ids))\n"
        )
        result = subprocess.run([sys.executable, "-c", script, str(store_dir), json.dumps({**kwargs, "epoch": epoch})],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        ids.extend(json.loads(result.stdout.strip().splitlines()[-1]))
    else:
        original = store_stream.get_worker_info
        try:
            for worker in range(2):
                store_stream.get_worker_info = lambda w=worker: SimpleNamespace(id=w, num_workers=2)
                ids.extend(float(z[0]) for z, _, _ in stream)
        finally:
            store_stream.get_worker_info = original
    assert len(ids) == len(stream)
    return ids


def test_stream_every_sample_once_across_ranks_and_workers(tmp_path: Path) -> None:
    out = tmp_path / "set"
    make_set(out, per_class=8, shard_size=5)  # 32 samples in 7 shards: shards do not divide evenly
    z, labels, images = DistillationStore.open(out).load_all()
    all_ids = sorted(z[:, 0].tolist())
    assert len(set(all_ids)) == 32

    orders = {}
    for epoch in (0, 1):
        per_rank = [_stream_ids(out, real_workers=epoch == 0, rank=r, world_size=2, seed=7, shuffle_buffer=6,
                                epoch=epoch) for r in range(2)]
        assert [len(ids) for ids in per_rank] == [16, 16]
        assert sorted(per_rank[0] + per_rank[1]) == all_ids  # exactly once, no overlap
        orders[epoch] = per_rank
    assert sorted(orders[0][0]) != sorted(orders[1][0])  # shards move between ranks across epochs
    assert orders[0] != orders[1]  # a new order each epoch
    again = [_stream_ids(out, rank=r, world_size=2, seed=7, shuffle_buffer=6, epoch=0) for r in range(2)]
    assert [sorted(ids) for ids in again] == [sorted(ids) for ids in orders[0]]  # simulated = real split
    assert again == [_stream_ids(out, rank=r, world_size=2, seed=7, shuffle_buffer=6, epoch=0) for r in range(2)]
    other_seed = [_stream_ids(out, rank=r, world_size=2, seed=8, shuffle_buffer=6, epoch=0) for r in range(2)]
    assert other_seed != again


def test_stream_values_and_unshuffled_order(tmp_path: Path) -> None:
    from distilgan.store.stream import StoreStream
    from distilgan.utils.images import uint8_to_float

    out = tmp_path / "set"
    make_set(out, per_class=3, shard_size=4)  # 12 samples, 3 shards
    z, labels, images = DistillationStore.open(out).load_all()
    stream = StoreStream(out, shuffle=False, rank=1, world_size=3)
    samples = list(stream)
    assert len(samples) == len(stream) == 4
    for i, (zi, yi, xi) in enumerate(samples, start=4):  # rank 1 of 3 holds positions 4..7
        np.testing.assert_array_equal(zi.numpy(), z[i])
        assert int(yi) == labels[i]
        np.testing.assert_array_equal(xi.numpy(), uint8_to_float(images[i]).transpose(2, 0, 1))
    # uneven split across 5 ranks x 3 (simulated) workers still covers everything once
    seen = []
    for rank in range(5):
        stream = StoreStream(out, seed=1, rank=rank, world_size=5, shuffle_buffer=2)
        for worker in range(3):
            for shard, lo, hi in stream.pieces(worker, 3):
                seen.extend(range(sum(stream.store.shard_counts()[:shard]) + lo,
                                  sum(stream.store.shard_counts()[:shard]) + hi))
    assert sorted(seen) == list(range(12))


def test_resumed_epoch_skips_in_the_workers_without_reading_or_converting(tmp_path: Path, monkeypatch) -> None:
    from distilgan.store import stream as store_stream

    out = tmp_path / "set"
    make_set(out, per_class=8, shard_size=4)  # 32 samples, 8 shards
    stream = store_stream.StoreStream(out, shuffle=False)
    # 2 workers of 16 samples, batches of 4: 5 done batches = 2 whole rounds in the workers + 4 samples after
    assert stream.plan_skip(5, 4, 2) == (8, 4)
    assert stream.plan_skip(1, 4, 2) == (0, 4)  # under one round: all of it after
    assert stream.plan_skip(7, 4, 0) == (28, 0)  # no workers: one stream, skipped at the source
    full = list(stream)
    read, converted = [], []
    real_read, real_convert = stream.store.read_shard, store_stream.uint8_to_float
    monkeypatch.setattr(stream.store, "read_shard", lambda i: (read.append(i), real_read(i))[1])
    monkeypatch.setattr(store_stream, "uint8_to_float", lambda x: (converted.append(len(x)), real_convert(x))[1])
    stream.set_epoch(0, skip_per_worker=10)
    rest = list(stream)
    assert [float(z[0]) for z, _, _ in rest] == [float(z[0]) for z, _, _ in full[10:]]
    assert read == list(range(2, 8)) and sum(converted) == 22  # shards 0-1 unread, the 2 skipped of shard 2 unconverted
