"""The teacher-student study of issue 16 as one table: teacher, distilled students, from-scratch baselines.

    python bench/quality_study.py --teacher cifar10-teacher \\
        --student ngf128=runs/student-ngf128/best --student ngf64=runs/student-ngf64/best \\
        --baseline ngf128=runs/baseline-ngf128/best \\
        --ref train=runs/ref/cifar10-train-50k.npz --ref test=runs/ref/cifar10-test-10k.npz \\
        --evals runs/study-eval [--n 10000] [--out bench/results/quality_study.json]

Per model, every figure with its protocol:

* quality: ``distilgan eval`` (FID, KID, precision/recall, intra-class FID, class agreement) at ``--n``
  class-balanced samples of the model's own z distribution, against every ``--ref`` at once (the samples
  are generated and passed through Inception once). Each evaluation is run as that command (so the
  table's figures are exactly what a user's command prints) and kept as ``EVALS/<model>.json``; a later
  call reuses the files it finds, so the study resumes, and an evaluation made by hand with the same
  options counts;
* teacher fidelity: pixel PSNR (uint8) of the model's images to the teacher's on the same z and labels
  (``--fidelity-n`` class-balanced samples); a from-scratch baseline never saw the teacher, so its figure
  is the chance level that distillation is measured against;
* cost: parameters, MACs per image, torch fp32 latency at batch 1 and throughput at batch 64 on
  ``--threads`` threads (medians);
* training: images seen (the step of the snapshot x the batch; a distillation step sees ``batch``
  teacher samples, a ``train-teacher`` D step ``batch`` real images) and the run's wall time (first to
  last log record).

Targets of issue 16: each distilled student's FID <= 1.3x the teacher's (ngf 128, the "tiny" student,
<= 1.5x; ``--fid-ratio LABEL=X`` changes one), and <= 0.75x the FID of the baseline with the same
label. Prints a markdown table and writes JSON with the machine's facts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_facts  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "quality_study.json"
FID_RATIO_TARGETS = {"ngf128": 1.5}  # issue 16: the tiny student (b) <= 1.5x the teacher's FID, the others 1.3x
DEFAULT_FID_RATIO, BASELINE_RATIO = 1.3, 0.75
FIDELITY_STREAM = 1601  # z stream of the fidelity samples, apart from eval's


def labelled(text: str, flag: str) -> tuple[str, str]:
    label, sep, value = text.partition("=")
    if not sep or not label or not value:
        raise SystemExit(f"{flag} takes LABEL=VALUE, got {text!r}")
    return label, value


def run_folder(checkpoint: str) -> Path | None:
    """The training run a snapshot came from (RUN/best, RUN/generator, RUN/checkpoints/generator-N), if any."""
    folder = Path(checkpoint)
    for candidate in (folder.parent, folder.parent.parent):
        if (candidate / "config.yaml").is_file() and (candidate / "log.jsonl").is_file():
            return candidate
    return None


def training_facts(checkpoint: str) -> dict[str, Any]:
    import yaml

    run = run_folder(checkpoint)
    if run is None:
        return {}
    config = yaml.safe_load((run / "config.yaml").read_text())
    meta = json.loads((Path(checkpoint) / "config.json").read_text()).get("metadata", {})
    batch = config["loop"]["batch_size"]
    times = [json.loads(line)["time"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    step = meta.get("step")
    return {"run": str(run), "kind": config.get("kind"), "step": step, "batch_size": batch,
            "images_seen": None if step is None else int(step) * batch,
            "wall_hours": round((times[-1] - times[0]) / 3600, 3) if len(times) > 1 else None,
            "precision": config["loop"].get("precision"), "real_data": config["data"].get("real") or config["data"].get("data")}


def evaluation(name: str, checkpoint: str, refs: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """`distilgan eval` of one model against every reference (one pass of generation and Inception),
    cached as EVALS/<name>.json; returns {reference name: that reference's JSON record}."""
    path = args.evals / f"{name}.json"
    if not path.is_file() and args.existing_evals_only:
        print(f"{name}: no evaluation in {path} (--existing-evals-only): its quality columns stay empty", flush=True)
        return {}
    if not path.is_file():
        command = [sys.executable, "-m", "distilgan", "eval", "--checkpoint", checkpoint, "--ref", *refs.values(),
                   "--n", str(args.n), "--metrics", "fid", "kid", "pr", "ifid", "ca", "--classifier", args.classifier,
                   "--json", str(path)]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    result = json.loads(path.read_text())
    if result["protocol"]["n_gen"] != args.n:
        raise SystemExit(f"{path} holds {result['protocol']['n_gen']} samples, this study asks {args.n}: delete it or pass --n")
    by_ref = result.get("by_reference") or [{"reference": result["protocol"]["reference"], "metrics": result["metrics"]}]
    by_file = {entry["reference"]["file"]: entry for entry in by_ref}
    missing = [ref for ref in refs.values() if ref not in by_file]
    if missing:
        raise SystemExit(f"{path} was made against other references (not {', '.join(missing)}): delete it to evaluate again")
    return {ref_name: {"metrics": by_file[ref]["metrics"], "protocol": {**result["protocol"], "reference": by_file[ref]["reference"]}}
            for ref_name, ref in refs.items()}


def same_z_images(model: Any, n: int) -> np.ndarray:
    """uint8 NHWC images of ``model`` for the study's fixed class-balanced z and labels (eval's generation path)."""
    from distilgan.commands.eval import _generate, _student_forward
    from distilgan.utils.latent import model_z_distribution
    from distilgan.utils.noise import balanced_labels, rng

    z = model_z_distribution(model).sample(rng(0, FIDELITY_STREAM), n, model.z_dim)
    labels = balanced_labels(0, n, list(range(model.num_classes)))
    return _generate(_student_forward(model, "cpu"), z, labels, 100, "same-z samples")


def comparison_grid(images: dict[str, np.ndarray], num_classes: int, per_class: int, path: Path) -> None:
    """One panel per model, side by side: a row per class, the same z in the same place of every panel."""
    from PIL import Image, ImageDraw

    from distilgan.utils.images import make_grid, save_png

    panels = []
    for name, batch in images.items():
        order = [c + k * num_classes for c in range(num_classes) for k in range(per_class)]  # labels are i % classes
        grid = make_grid(batch[order], nrow=per_class)
        canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + 14), "white")
        canvas.paste(Image.fromarray(grid), (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), name, fill=(0, 0, 0))
        panels.append(np.asarray(canvas))
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    save_png(np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1), path)


def cost(model: Any, threads: int, min_seconds: float) -> dict[str, Any]:
    import torch

    from distilgan.deploy.bench import time_fn
    from distilgan.models.macs import count_macs

    torch.set_num_threads(threads)
    counted = count_macs(model)
    result: dict[str, Any] = {"parameters": counted.params, "macs": counted.macs_per_image}
    for batch, key in ((1, "latency_b1_ms"), (64, "throughput_b64")):
        z, labels = torch.randn(batch, model.z_dim), torch.zeros(batch, dtype=torch.long)
        with torch.inference_mode():
            timed = time_fn(lambda: model(z, labels), warmup=3, repeats=20 if batch == 1 else 5, min_seconds=min_seconds)
        result[key] = timed["median_ms"] if batch == 1 else batch / timed["median_ms"] * 1e3
    return result


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(rows: list[dict[str, Any]], refs: list[str]) -> str:
    head = ["model", "role", "images seen", "wall h"]
    for ref in refs:
        head += [f"FID {ref}", f"KID {ref}"]
    head += ["precision / recall", "intra-FID", "class agr. %", "PSNR to teacher dB", "params", "MMACs", "b1 ms", "b64 img/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["name"], row["role"], fmt(row["training"].get("images_seen")), fmt(row["training"].get("wall_hours"))]
        for ref in refs:
            metrics = row["evals"].get(ref, {}).get("metrics", {})
            cells += [fmt(metrics.get("fid")), fmt(metrics.get("kid"), 4)]
        full = row["evals"].get(row["full_ref"], {}).get("metrics", {})
        pr = f"{fmt(full.get('precision'), 3)} / {fmt(full.get('recall'), 3)}" if "precision" in full else "—"
        ca = full.get("class_agreement")
        cells += [pr, fmt(full.get("ifid")), fmt(None if ca is None else 100 * ca, 1), fmt(row.get("psnr_to_teacher_db")),
                  fmt(row["cost"]["parameters"]), fmt(row["cost"]["macs"] / 1e6, 1), fmt(row["cost"]["latency_b1_ms"]),
                  fmt(row["cost"]["throughput_b64"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], ref: str, ratios: dict[str, float]) -> list[dict[str, Any]]:
    fid = {(r["role"], r["label"]): r["evals"].get(ref, {}).get("metrics", {}).get("fid") for r in rows}
    teacher = fid.get(("teacher", "teacher"))
    checks = []
    for (role, label), value in fid.items():
        if role != "student" or value is None:
            continue
        bound = ratios.get(label, DEFAULT_FID_RATIO)
        checks.append({"check": f"{label}: FID <= {bound}x teacher ({ref})", "bound": bound,
                       "value": None if teacher is None else value / teacher,
                       "met": None if teacher is None else value <= bound * teacher})  # None: not measured
        base = fid.get(("baseline", label))
        checks.append({"check": f"{label}: FID <= {BASELINE_RATIO}x its from-scratch baseline ({ref})", "bound": BASELINE_RATIO,
                       "value": None if base is None else value / base, "met": None if base is None else value <= BASELINE_RATIO * base})
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the teacher's checkpoint (folder or built-in name)")
    parser.add_argument("--student", action="append", default=[], metavar="LABEL=CHECKPOINT")
    parser.add_argument("--baseline", action="append", default=[], metavar="LABEL=CHECKPOINT")
    parser.add_argument("--ref", action="append", required=True, metavar="NAME=STATS.npz",
                        help="reference statistics (`distilgan stats`), e.g. train=... test=...; the first one is the targets'")
    parser.add_argument("--evals", type=Path, required=True, help="folder of the evaluation JSONs (made when missing)")
    parser.add_argument("--n", type=int, default=10000, help="samples per evaluation (default 10000)")
    parser.add_argument("--existing-evals-only", action="store_true",
                        help="run no evaluation: a model without its EVALS/<name>.json gets empty quality columns")
    parser.add_argument("--fidelity-n", type=int, default=1000, help="samples for the PSNR to the teacher (default 1000)")
    parser.add_argument("--classifier", default="../shared/weights/cifar10-resnet/resnet56-4bfd9763.th", help="class agreement judge")
    parser.add_argument("--fid-ratio", action="append", default=[], metavar="LABEL=X", help="a student's FID target as a multiple of the teacher's")
    parser.add_argument("--threads", type=int, default=1, help="threads for the latency and throughput (default 1)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least time of each timed phase (default 1.0)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--grid", type=Path, default=None, help="PNG of every model side by side on the same z (default: OUT with .png)")
    parser.add_argument("--grid-per-class", type=int, default=6, help="samples per class row in --grid (default 6)")
    args = parser.parse_args()

    from distilgan.models import load_pretrained

    refs = dict(labelled(text, "--ref") for text in args.ref)
    args.full_ref = next(iter(refs))
    ratios = {**FID_RATIO_TARGETS, **{k: float(v) for k, v in (labelled(t, "--fid-ratio") for t in args.fid_ratio)}}
    models = [("teacher", "teacher", args.teacher)]
    models += [("student", *labelled(t, "--student")) for t in args.student]
    models += [("baseline", *labelled(t, "--baseline")) for t in args.baseline]
    args.evals.mkdir(parents=True, exist_ok=True)
    from distilgan.deploy.bench import pixel_quality

    teacher = load_pretrained(args.teacher)
    teacher_images = same_z_images(teacher, args.fidelity_n)
    started, rows, shown = time.time(), [], {}
    per_class = max(1, min(args.grid_per_class, args.fidelity_n // teacher.num_classes))  # the grid shows fidelity samples
    for role, label, checkpoint in models:
        name = label if role == "teacher" else f"{role}-{label}"
        model = teacher if role == "teacher" else load_pretrained(checkpoint)
        images = teacher_images if role == "teacher" else same_z_images(model, args.fidelity_n)
        shown[name] = images[: per_class * model.num_classes]
        row = {"name": name, "role": role, "label": label, "checkpoint": checkpoint, "full_ref": args.full_ref,
               "training": training_facts(checkpoint), "cost": cost(model, args.threads, args.min_seconds),
               "psnr_to_teacher_db": None if role == "teacher" else pixel_quality(images, teacher_images)["psnr_db"],
               "evals": evaluation(name, checkpoint, refs, args)}
        rows.append(row)
        print(f"{name}: done", flush=True)
    grid = args.grid or args.out.with_suffix(".png")
    comparison_grid(shown, teacher.num_classes, per_class, grid)
    print(f"wrote {grid}")
    table = markdown(rows, list(refs))
    checks = targets(rows, args.full_ref, ratios)
    print(table)
    for check in checks:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        print(f"{verdict}: {check['check']}: " + ("—" if check["value"] is None else f"{check['value']:.3f}"))
    protocol = {"n": args.n, "references": refs, "fidelity_n": args.fidelity_n, "fidelity_z_stream": FIDELITY_STREAM,
                "cost": f"torch fp32, {args.threads} thread(s), medians", "eval": "distilgan eval (see each JSON's protocol)"}
    result = {"machine": machine_facts(), "protocol": protocol, "rows": rows, "targets": checks, "table": table,
              "seconds": round(time.time() - started, 1), "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from distilgan.utils.atomic import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
