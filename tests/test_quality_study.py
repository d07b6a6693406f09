"""bench/quality_study.py assembles the issue-16 table: training facts from the run folders, the cost and
teacher-fidelity figures it measures, the evaluations it reuses, and the targets it checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from distilgan.models import BigGANGenerator, DiStyleGANGenerator

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "quality_study.py"
N = 40


def fake_run(folder: Path, kind: str, batch: int, step: int, model: torch.nn.Module) -> Path:
    """A run folder as the trainers leave it: config.yaml, log.jsonl, and a best/ snapshot at ``step``."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"kind": kind, "data": {"data": "set", "real": "cifar10"},
                                                        "loop": {"batch_size": batch, "precision": "auto"}}))
    (folder / "log.jsonl").write_text("".join(json.dumps({"step": s, "time": 1000.0 + 1.8 * s}) + "\n" for s in (10, step)))
    model.save_pretrained(folder / "best")
    config = json.loads((folder / "best" / "config.json").read_text())
    config["metadata"] = {"step": step}
    (folder / "best" / "config.json").write_text(json.dumps(config))
    return folder / "best"


def eval_record(refs: list[str], fids: list[float]) -> dict:
    by_ref = [{"reference": {"file": ref}, "n_ref": 10, "metrics": {"fid": fid, "kid": fid / 1000, "precision": 0.5,
                                                                    "recall": 0.4, "ifid": fid * 2, "class_agreement": 0.5}}
              for ref, fid in zip(refs, fids)]
    return {"metrics": by_ref[0]["metrics"], "protocol": {"n_gen": N, "reference": by_ref[0]["reference"]}, "by_reference": by_ref}


def test_study_table_targets_and_grid(tmp_path):
    torch.manual_seed(0)
    teacher = BigGANGenerator(z_dim=16, ch=8)
    teacher.save_pretrained(tmp_path / "teacher")
    student = fake_run(tmp_path / "student", "distill", 128, 500, DiStyleGANGenerator(z_dim=16, ngf=8))
    baseline = fake_run(tmp_path / "baseline", "train-teacher", 64, 1000, DiStyleGANGenerator(z_dim=16, ngf=8))
    refs = [str(tmp_path / "train.npz"), str(tmp_path / "test.npz")]
    evals = tmp_path / "evals"
    evals.mkdir()
    # evaluations made before (the script makes missing ones with `distilgan eval`): teacher 20, student 28, baseline 40
    for name, fid in (("teacher", 20.0), ("student-ngf8", 28.0), ("baseline-ngf8", 40.0)):
        (evals / f"{name}.json").write_text(json.dumps(eval_record(refs, [fid, fid + 2])))
    out = tmp_path / "study.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--teacher", str(tmp_path / "teacher"), "--student", f"ngf8={student}",
                           "--baseline", f"ngf8={baseline}", "--ref", f"train={refs[0]}", "--ref", f"test={refs[1]}",
                           "--evals", str(evals), "--n", str(N), "--fidelity-n", "40", "--grid-per-class", "2",
                           "--min-seconds", "0", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["student-ngf8"]["training"]["images_seen"] == 500 * 128  # a distillation step: batch teacher samples
    assert rows["baseline-ngf8"]["training"]["images_seen"] == 1000 * 64  # a train-teacher D step: batch real images
    assert rows["student-ngf8"]["training"]["wall_hours"] == round(1.8 * 490 / 3600, 3)
    assert rows["teacher"]["training"] == {} and rows["teacher"]["psnr_to_teacher_db"] is None
    assert rows["student-ngf8"]["evals"]["test"]["metrics"]["fid"] == 30.0
    cost = rows["student-ngf8"]["cost"]
    assert cost["parameters"] == sum(p.numel() for p in DiStyleGANGenerator(z_dim=16, ngf=8).parameters())
    assert cost["macs"] > 0 and cost["latency_b1_ms"] > 0 and cost["throughput_b64"] > 0
    assert 0 < rows["student-ngf8"]["psnr_to_teacher_db"] < 60  # an untrained student is far from its teacher
    checks = {check["check"].split(":")[1].strip(): check for check in result["targets"]}
    assert checks["FID <= 1.3x teacher (train)"]["value"] == 28 / 20 and not checks["FID <= 1.3x teacher (train)"]["met"]
    assert checks["FID <= 0.75x its from-scratch baseline (train)"]["value"] == 0.7
    assert checks["FID <= 0.75x its from-scratch baseline (train)"]["met"]
    assert "| student-ngf8 | student | 64,000 |" in result["table"] and "NOT met" in proc.stdout
    grid = np.asarray(Image.open(out.with_suffix(".png")))
    assert grid.shape[0] == 14 + 10 * 34 + 2 and grid.shape[1] == 3 * (2 * 34 + 2) + 2 * 8  # 3 panels, 10 rows of 2
    assert result["machine"]["cpu"] and result["protocol"]["n"] == N

    # --existing-evals-only: a model without its evaluation keeps empty quality columns, its targets "not measured"
    (evals / "teacher.json").unlink()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--teacher", str(tmp_path / "teacher"), "--student", f"ngf8={student}",
                           "--ref", f"test={refs[1]}", "--evals", str(evals), "--n", str(N), "--fidelity-n", "20",
                           "--min-seconds", "0", "--existing-evals-only", "--out", str(tmp_path / "partial.json")],
                           capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    partial = json.loads((tmp_path / "partial.json").read_text())
    assert partial["rows"][0]["evals"] == {} and "| teacher | teacher | — | — | — | — |" in partial["table"]
    assert [c["met"] for c in partial["targets"]] == [None, None]  # no teacher figure, no baseline given
    assert "not measured: ngf8: FID <= 1.3x teacher (test)" in proc.stdout

    # an evaluation made against other references is not silently reused
    (evals / "teacher.json").write_text(json.dumps(eval_record([refs[1]], [22.0])))  # the test statistics only
    proc = subprocess.run([sys.executable, str(SCRIPT), "--teacher", str(tmp_path / "teacher"), "--ref", f"train={refs[0]}",
                           "--ref", f"test={refs[1]}", "--evals", str(evals), "--n", str(N), "--fidelity-n", "20",
                           "--min-seconds", "0", "--out", str(tmp_path / "again.json")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "other references" in proc.stderr
