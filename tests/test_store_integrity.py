"""Shards are checked against the manifest when first read, DataLoader worker errors reach the user as
one line, and a flat or out-of-range teacher output is refused while sampling (issue 24)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilgan.store import reader as store_read
from distilgan.store import DistillationStore, read_npz, shard_name, verify_store, write_npz, write_store
from distilgan.errors import UserError
from distilgan.teachers.base import Teacher

Z_DIM, CLASSES, RES = 16, 3, 16
TINY = ["--ngf", "16", "--ndf", "16", "--project-dim", "16", "--batch-size", "16", "--log-every", "1",
        "--seed", "1", "--gstep", "2", "--precision", "fp32", "--grid-every", "100", "--ckpt-every", "100"]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's: one torch thread for this module


class LinearTeacher(Teacher):
    """tanh of a fixed linear map of z per class: deterministic, no weights on disk."""

    spec = "test:linear"

    def __init__(self, scale: float = 1.0, output_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        self.z_dim, self.num_classes, self.resolution, self.channels = Z_DIM, CLASSES, RES, 3
        self.output_range, self.scale = output_range, scale
        self.weights = np.random.default_rng(0).standard_normal((CLASSES, Z_DIM, 3 * RES * RES)).astype(np.float32) / 4
        self.calls = 0

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        self.calls += 1
        pixels = self.scale * np.tanh(np.einsum("nz,nzp->np", z, self.weights[labels]))
        return pixels.reshape(len(z), 3, RES, RES)

    def fingerprint(self) -> str:
        return f"linear-{self.scale}"


@pytest.fixture(autouse=True)
def checks_on():
    """Every test starts (and leaves) with the process default on and nothing cached as checked."""
    store_read.set_shard_checks(True)
    store_read._VERIFIED.clear()
    yield
    store_read.set_shard_checks(True)
    store_read._VERIFIED.clear()


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "set"
    write_store(LinearTeacher(), path, per_class=16, shard_size=20, progress=False)  # 48 samples, 3 shards
    return path


@pytest.fixture
def store(good_store: Path, tmp_path: Path) -> Path:
    """A fresh copy of the good set, for a test to damage."""
    return Path(shutil.copytree(good_store, tmp_path / "set"))


def tamper(store: Path, index: int = 1) -> str:
    """Rewrite shard ``index`` as a valid npz with other pixels (what a stray script or a copy from
    another set does): it loads fine, only its sha256 tells. Returns the manifest's sha256."""
    path = store / shard_name(index)
    arrays = read_npz(path)
    arrays["images"] = 255 - arrays["images"]
    write_npz(path, arrays)
    entry = DistillationStore.open(store).shards[index]
    return entry["sha256"]


def one_line(err: str) -> str:
    """The error line, alone on stderr apart from progress bars (an error mid-epoch follows the bar)."""
    lines = [line for line in err.strip().splitlines() if not re.search(r"\d+%\||\d+/\d+ steps?\b", line)]
    assert len(lines) == 1 and lines[0].startswith("distilgan: error: "), err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- read-time check


def test_tampered_shard_is_refused_when_read(store: Path) -> None:
    expected = tamper(store)
    assert any("checksum mismatch" in p for p in verify_store(store))  # what verify says
    reader = DistillationStore.open(store)
    reader.read_shard(0)  # the good ones read as before
    with pytest.raises(UserError) as caught:
        reader.read_shard(1)
    message = str(caught.value)
    actual = store_read.sha256_file(store / shard_name(1))
    assert "\n" not in message and shard_name(1) in message
    assert f"manifest sha256 {expected[:12]}" in message and f"file {actual[:12]}" in message
    assert f"distilgan verify {store}" in message and "rerun the distilgan sample command" in message
    with pytest.raises(UserError, match=shard_name(1)):
        reader.load_all()  # the in-memory path reads through the same check


def test_the_check_can_be_skipped(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tamper(store)
    z, labels, images = DistillationStore.open(store, verify=False).read_shard(1)
    assert images.shape == (20, RES, RES, 3)
    store_read.set_shard_checks(False)  # what distill --no-verify-shards does
    assert DistillationStore.open(store).verify is False and len(DistillationStore.open(store).load_all()[0]) == 48
    store_read.set_shard_checks(True)
    monkeypatch.setenv(store_read.VERIFY_ENV, "0")  # any command
    assert DistillationStore.open(store).verify is False
    monkeypatch.delenv(store_read.VERIFY_ENV)
    assert DistillationStore.open(store).verify is True


def test_each_shard_is_hashed_once_per_process(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    real = store_read.sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(store_read, "sha256_file", counting)
    DistillationStore.open(store).load_all()
    DistillationStore.open(store).load_all()  # a second reader of the same set (e.g. the metric reference)
    DistillationStore.open(store).read_shard(2)
    assert sorted(hashed) == [shard_name(i) for i in range(3)]
    tamper(store, 2)  # a changed file (new mtime) is hashed again, and refused
    with pytest.raises(UserError, match=shard_name(2)):
        DistillationStore.open(store).read_shard(2)
    assert hashed.count(shard_name(2)) == 2


def test_store_batches_check_in_memory_and_streaming(store: Path, good_store: Path) -> None:
    from distilgan.train.batches import StoreBatches
    from distilgan.train.distributed import DistContext

    tamper(store, 2)
    with pytest.raises(UserError, match=shard_name(2)):  # in memory: read at once, before any step
        StoreBatches(str(store), 16, 0, DistContext(), workers=0, in_memory=True)
    source = StoreBatches(str(store), 16, 0, DistContext(), workers=0, in_memory=False)
    with pytest.raises(UserError, match=shard_name(2)):  # streaming without worker processes: reads run here
        list(source.batches(0))
    fine = StoreBatches(str(good_store), 16, 0, DistContext(), workers=0, in_memory=False)
    assert len(list(fine.batches(0))) == 3 and fine._all_checked  # later epochs' workers need not hash again
    for in_memory in (True, False):
        unchecked = StoreBatches(str(store), 16, 0, DistContext(), workers=0, in_memory=in_memory, verify=False)
        assert len(list(unchecked.batches(0))) == 3


def test_distill_refuses_a_tampered_store_and_the_flag_skips(store: Path, tmp_path: Path, cli) -> None:
    tamper(store)
    code, _, err = cli("distill", "--data", store, "--out", tmp_path / "run", "--workers", "0", "--max-steps", "1", *TINY)
    assert code == 2
    line = one_line(err)
    assert shard_name(1) in line and "fails its checksum" in line and "distilgan verify" in line
    assert not (tmp_path / "run" / "generator").exists()
    code, out, err = cli("distill", "--data", store, "--out", tmp_path / "run2", "--workers", "0", "--max-steps", "1",
                         "--no-verify-shards", *TINY)
    assert code == 0, err
    assert (tmp_path / "run2" / "generator").is_dir()


# ----------------------------------------------------------------------------- DataLoader workers


def test_worker_error_is_unwrapped_to_its_one_line() -> None:
    from torch._utils import ExceptionWrapper

    from distilgan.store.stream import unwrap_worker_error

    try:
        raise UserError("unreadable shard x.npz: bad zip (run distilgan verify S)")
    except UserError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 1")
    with pytest.raises(UserError) as caught:
        wrapped.reraise()  # what the DataLoader does in the main process
    assert "Original Traceback" in str(caught.value)
    assert str(unwrap_worker_error(caught.value)) == "unreadable shard x.npz: bad zip (run distilgan verify S)"
    plain = UserError("not from a worker")
    assert unwrap_worker_error(plain) is plain


def _distill_subprocess(store: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    # DataLoader workers in a fresh interpreter: forked inside pytest after OpenVINO/oneDNN started
    # their thread pools they have crashed (rc 139)
    command = [sys.executable, "-m", "distilgan", "distill", "--data", str(store), "--out", str(out),
               "--workers", "2", "--no-store-in-memory", "--max-steps", "3", *TINY, *extra]  # a whole epoch: every shard
    return subprocess.run(command, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=300)


def test_truncated_shard_in_workers_is_one_line(store: Path, tmp_path: Path) -> None:
    path = store / shard_name(1)
    path.write_bytes(path.read_bytes()[:-100])
    checked = _distill_subprocess(store, tmp_path / "a")
    assert checked.returncode == 2, checked.stderr[-3000:]
    line = one_line(checked.stderr)
    assert shard_name(1) in line and "fails its checksum" in line
    unchecked = _distill_subprocess(store, tmp_path / "b", "--no-verify-shards")  # the read itself fails
    assert unchecked.returncode == 2, unchecked.stderr[-3000:]
    line = one_line(unchecked.stderr)
    assert "unreadable shard" in line and shard_name(1) in line and "distilgan verify" in line


# ----------------------------------------------------------------------------- sampling


def test_declared_range_far_too_wide_is_refused(tmp_path: Path, cli) -> None:
    out = tmp_path / "black"
    code, _, err = cli("sample", "--teacher", "builtin:toy", "--output-range", "0", "255", "--out", out,
                       "--per-class", 1, "--quiet")
    assert code == 2
    line = one_line(err)
    assert "only in [" in line and "flat" in line and "--output-range -1 1" in line
    assert not out.exists()  # refused at the probe, before the folder is made
    code, _, err = cli("sample", "--teacher", "builtin:toy", "--output-range", "0", "1", "--out", out,
                       "--per-class", 1, "--quiet")
    line = one_line(err)
    assert code == 2 and "outside its declared range [0, 1]" in line and "--output-range -1 1" in line


def test_constant_or_flat_batches_are_refused_while_sampling(tmp_path: Path) -> None:
    class Constant(LinearTeacher):
        def _generate(self, z, labels):
            return np.full((len(z), 3, RES, RES), 0.25, np.float32)

    with pytest.raises(UserError, match=r"constant batch \(every pixel 0.25\)"):
        write_store(Constant(), tmp_path / "c", per_class=4, progress=False)
    assert not (tmp_path / "c").exists()

    class GoesFlat(LinearTeacher):
        def _generate(self, z, labels):
            out = super()._generate(z, labels)
            return out if self.calls <= 3 else out * 0.001  # the probe and shard 0's 2 batches are fine

    with pytest.raises(UserError) as caught:
        write_store(GoesFlat(), tmp_path / "f", per_class=8, shard_size=12, batch_size=6, progress=False)
    assert "only in [" in str(caught.value) and "--output-range" in str(caught.value)
    assert verify_store(tmp_path / "f")[0].startswith("set is incomplete: 1 of 2")  # the good shard is kept
    # a dark but real teacher output (a tenth of the range) is not flat
    assert write_store(LinearTeacher(scale=0.1), tmp_path / "dim", per_class=2, progress=False)["complete"]
