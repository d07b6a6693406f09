"""``distilgan sample`` under torchrun (2 CPU processes, gloo): the shards are split over the ranks, the
folder is byte-identical to a single-process run, and a killed rank's finished shards are kept on rerun."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# one thread per process: 2 ranks on a shared 2-core machine, and identical float paths in every run
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# 12 per class x 10 classes = 120 samples in 5 shards (the last one partial), teacher batches of 10
ARGS = ["sample", "--teacher", "builtin:cifar10-teacher", "--per-class", "12", "--shard-size", "25",
        "--batch-size", "10", "--seed", "3", "--quiet"]
TIMING_KEYS: set[str] = set()  # the manifest holds no timing fields (docs/store.md); kept for the comparison's intent


def _sample(out: Path, ranks: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    launcher = [] if ranks == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    command = [sys.executable, *launcher, "-m", "distilgan", *ARGS, "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=120)


def _contents(folder: Path) -> dict[str, str]:
    """sha256 of every file but the lock, and the manifest minus timing fields."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.name != ".lock"}
    manifest = json.loads((folder / "manifest.json").read_text())
    files["manifest.json"] = json.dumps({k: v for k, v in manifest.items() if k not in TIMING_KEYS}, sort_keys=True)
    return files


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("single") / "set"
    proc = _sample(out, 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _contents(out)


def test_two_ranks_write_the_same_bytes_as_one_process(single: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "set"
    proc = _sample(out, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote 120 samples") == 1  # rank 0 alone reports
    assert sorted(single) == ["manifest.json", *[f"shard-{k:05d}.npz" for k in range(5)]]
    assert _contents(out) == single  # no entry files left, every shard and the manifest identical
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and [s["index"] for s in manifest["shards"]] == list(range(5))
    verify = subprocess.run([sys.executable, "-m", "distilgan", "verify", str(out)], capture_output=True, text=True,
                            env=ENV, timeout=60)
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr


def test_a_killed_rank_resumes(single: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "set"
    # rank 1 owns shards 1 and 3 (round-robin); it dies by SIGKILL right after writing shard 1
    killed = _sample(out, 2, {"DISTILGAN_TEST_KILL_SAMPLE": "1:1"})
    assert killed.returncode != 0
    assert not (out / "manifest.json").exists()  # the manifest comes once, at the end
    assert (out / "shard-00001.npz").is_file() and (out / ".entry-00001.json").is_file()
    assert not (out / "shard-00003.npz").exists()  # rank 1's second shard never came
    entry = json.loads((out / ".entry-00001.json").read_text())["entry"]
    assert entry["sha256"] == single["shard-00001.npz"]
    kept = sorted(p.name for p in out.glob(".entry-*.json"))

    proc = _sample(out, 2)  # the same command again
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept_samples = sum(json.loads(single["manifest.json"])["shards"][int(n[7:12])]["count"] for n in kept)
    assert f"{kept_samples} kept from an earlier run" in proc.stdout, proc.stdout
    assert _contents(out) == single
