"""`distilgan sample` and `distilgan verify` end to end: real teacher files, kill -9, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from distilgan.store import DistillationStore, shard_name
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A python: teacher in a file; SLOW_TEACHER_SLEEP (seconds per call) makes it slow for the kill test
# without changing its fingerprint (the file's bytes).
PY_TEACHER = textwrap.dedent(
    """
    import os, time
    import numpy as np

    class Formula:
        z_dim, num_classes, resolution, channels = 8, 3, 8, 3
        class_names = ["cat", "dog", "emu"]
        mode = "ok"

        def __call__(self, z, labels):
            time.sleep(float(os.environ.get("SLOW_TEACHER_SLEEP", "0")))
            pixels = 0.5 * np.tanh(z[:, :3]) + 0.2 * labels[:, None] - 0.2
            images = np.repeat(pixels[:, :, None, None], 8, axis=2).repeat(8, axis=3).astype(np.float32)
            if self.mode == "shape":
                return images[:, :, :4, :4]
            if self.mode == "range":
                return (images + 1) * 127.5
            return images

    TEACHER = Formula()

    def wrong_shape():
        teacher = Formula(); teacher.mode = "shape"; return teacher

    def wrong_range():
        teacher = Formula(); teacher.mode = "range"; return teacher
    """
)


@pytest.fixture
def py_teacher(tmp_path: Path) -> Path:
    path = tmp_path / "formula_teacher.py"
    path.write_text(PY_TEACHER)
    return path


def assert_matches_module(out: Path, module) -> None:
    """Stored images equal the teacher module's output for the stored z and labels, to uint8 rounding."""
    import torch

    z, labels, images = DistillationStore.open(out).load_all()
    with torch.no_grad():
        reference = module(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    expected = nchw_to_nhwc(float_to_uint8(reference))
    diff = np.abs(images.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1  # a float ulp across runtimes may flip a value sitting on a .5 boundary
    assert (diff == 0).mean() > 0.99


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_sample_from_teacher_file_matches_teacher(tmp_path: Path, cli, kind: str) -> None:
    from tests._teacher_fixtures import make_onnx_teacher, make_torchscript_teacher

    if kind == "onnx":
        module = make_onnx_teacher(tmp_path / "t.onnx", z_dim=8, num_classes=3, resolution=8)
        spec = f"onnx:{tmp_path / 't.onnx'}"
    else:
        module = make_torchscript_teacher(tmp_path / "t.pt", z_dim=8, num_classes=3, resolution=8)
        spec = f"torchscript:{tmp_path / 't.pt'}"
    out = tmp_path / "set"
    code, stdout, err = cli("sample", "--teacher", spec, "--out", out, "--per-class", 11, "--shard-size", 10,
                            "--batch-size", 4, "--seed", 5, "--quiet")
    assert code == 0, err
    assert "wrote 33 samples" in stdout and "4 shards" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["spec"] == spec and manifest["complete"]
    assert_matches_module(out, module)

    code, stdout, _ = cli("verify", out, "--quiet")
    assert code == 0 and stdout.startswith("OK") and "33 samples" in stdout


def test_classes_by_name_and_output_range(tmp_path: Path, cli) -> None:
    from tests._teacher_fixtures import make_onnx_teacher

    module = make_onnx_teacher(tmp_path / "t.onnx", num_classes=3, output_range=(0.0, 1.0))
    out = tmp_path / "set"
    code, _, err = cli("sample", "--teacher", tmp_path / "t.onnx", "--out", out, "--per-class", 4, "--classes",
                       "2", "0", "--output-range", 0, 1, "--quiet",
                       "--teacher-option", "class_names=cat,dog,emu")
    assert code == 0, err
    store = DistillationStore.open(out)
    assert store.classes == [2, 0] and store.class_names == ["cat", "dog", "emu"]
    _, labels, _ = store.load_all()
    assert labels.tolist() == [2, 0] * 4

    import torch

    z, labels, images = store.load_all()
    with torch.no_grad():
        raw = module(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    expected = nchw_to_nhwc(float_to_uint8(raw * 2 - 1))  # [0, 1] mapped to [-1, 1]
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1

    code, _, _ = cli("sample", "--teacher", tmp_path / "t.onnx", "--out", tmp_path / "named", "--per-class", 2,
                     "--classes", "emu", "--quiet", "--teacher-option", "class_names=cat,dog,emu")
    assert code == 0 and DistillationStore.open(tmp_path / "named").classes == [2]


def test_kill_9_then_rerun_completes_byte_identical(tmp_path: Path, cli, py_teacher: Path) -> None:
    spec = f"python:{py_teacher}:TEACHER"
    common = ["--teacher", spec, "--per-class", 6, "--shard-size", 3, "--batch-size", 1, "--seed", 2]

    # Uninterrupted reference, in this process.
    code, _, err = cli("sample", *common, "--out", tmp_path / "ref", "--quiet")
    assert code == 0, err

    # A slow run in a subprocess, killed once shard 0 is recorded and shard 1 is being sampled.
    killed = tmp_path / "killed"
    env = {**os.environ, "SLOW_TEACHER_SLEEP": "0.25", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "distilgan", "sample", *map(str, common), "--out", str(killed), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest_path = killed / "manifest.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest_path.exists() and json.loads(manifest_path.read_text())["shards"]:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = json.loads(manifest_path.read_text())
    assert 1 <= len(before["shards"]) < 6 and not before["complete"]

    code, out, err = cli("verify", killed, "--quiet")
    assert code == 1 and "incomplete" in out

    code, stdout, err = cli("sample", *common, "--out", killed, "--quiet")
    assert code == 0, err
    assert f"{3 * len(before['shards'])} kept from an earlier run" in stdout
    assert cli("verify", killed, "--quiet")[0] == 0
    assert not list(killed.glob(".tmp-*"))
    ref_manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    new_manifest = json.loads(manifest_path.read_text())
    assert new_manifest["shards"] == ref_manifest["shards"]
    for k in range(6):
        assert (killed / shard_name(k)).read_bytes() == (tmp_path / "ref" / shard_name(k)).read_bytes()


def test_verify_names_a_shard_with_one_corrupted_byte(tmp_path: Path, cli, py_teacher: Path) -> None:
    out = tmp_path / "set"
    assert cli("sample", "--teacher", f"python:{py_teacher}:TEACHER", "--out", out, "--per-class", 4,
               "--shard-size", 5, "--quiet")[0] == 0
    victim = out / shard_name(1)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, stdout, _ = cli("verify", out, "--quiet")
    assert code == 1
    bad = [line for line in stdout.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and shard_name(1) in bad[0] and "checksum" in bad[0]


def one_line_error(result: tuple[int, str, str], *fragments: str) -> None:
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distilgan: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path, cli, py_teacher: Path) -> None:
    out = tmp_path / "set"
    ok = f"python:{py_teacher}:TEACHER"

    def sample(*args):
        return cli("sample", "--per-class", 2, "--quiet", *args)

    one_line_error(sample("--teacher", f"onnx:{tmp_path / 'missing.onnx'}", "--out", out), "not found")
    one_line_error(sample("--teacher", "foo:bar", "--out", out), "unknown teacher scheme")
    one_line_error(sample("--teacher", f"python:{py_teacher}:wrong_shape", "--out", out), "shape")
    one_line_error(sample("--teacher", f"python:{py_teacher}:wrong_range", "--out", out), "--output-range")
    one_line_error(sample("--teacher", ok, "--out", out, "--classes", "12"), "outside")
    one_line_error(sample("--teacher", ok, "--out", out, "--classes", "zebra"), "unknown class 'zebra'", "cat")
    assert not (out / "manifest.json").exists()  # none of the above wrote a set

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    one_line_error(sample("--teacher", ok, "--out", blocker / "set"), "a-file is a file, not a folder")  # utils/paths.py, at start
    one_line_error(sample("--teacher", ok, "--out", blocker), "is a file")

    assert sample("--teacher", ok, "--out", out)[0] == 0
    one_line_error(sample("--teacher", ok, "--out", out, "--seed", 9), "--seed", "--overwrite")
    assert sample("--teacher", ok, "--out", out, "--seed", 9, "--overwrite")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 9

    one_line_error(cli("verify", tmp_path / "nowhere"), "not found")
    one_line_error(cli("verify", py_teacher.parent), "not a distillation set")
