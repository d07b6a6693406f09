"""How much INT8 accuracy does each calibration source cost? models x sources x sizes x seeds.

    .venv/bin/python bench/calibration_study.py [--models resnet20=PATH,...] [--sources real,noise,uniform]
        [--sizes 100,300,1000] [--seeds 0,1,2] [--keep 1.0,0.5] [--student CKPT] [--teacher SPEC]
        [--data DATASET] [--eval-size N] [--threads N] [--throughput] [--resume]
    .venv/bin/python bench/calibration_study.py --combine a.json,b.json --out all.json

For each classifier: FP32 accuracy on the test split once (OpenVINO), then for every (source, size,
seed, keep) an ``nncf.quantize`` run and the INT8 accuracy; the drop is FP32 - INT8 in points.
Prints a markdown table (mean +- sd over seeds), "gap closed" per synthetic source, writes
bench/results/calibration_study.json (after every run, so a long study can be resumed with
--resume) and a PNG bar chart. Studies of different models run in parallel processes (each its own
--out) are merged by --combine. ``--keep`` < 1 filters student/teacher images by the classifier's
own confidence (draw size/keep, keep the top fraction per class). Sources that cannot run (no
--student or --teacher) are skipped with a note. Defaults use ../shared: the CIFAR-10 JPEG copy
and the shared ResNet-20/56, so absolute accuracies are for that copy (see ../shared/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
SYNTHETIC = ("student", "teacher")
COLOURS = {"real": (46, 125, 50), "student": (25, 118, 210), "teacher": (123, 31, 162), "noise": (211, 47, 47),
           "noise-pixel": (245, 124, 0), "uniform": (97, 97, 97)}


def parse_models(text: str | None) -> dict[str, str]:
    """``name=path,...`` or bare paths; default: the shared ResNet-20 and ResNet-56."""
    from distilgan.utils.shared_data import shared_path

    if not text:
        folder = shared_path("weights", "cifar10-resnet")
        if folder is None:
            raise SystemExit("no --models given and ../shared is absent (pass --models name=checkpoint,...)")
        return {f"resnet{d}": str(next(folder.glob(f"resnet{d}-*.th"))) for d in (20, 56)}
    models = {}
    for item in text.split(","):
        name, _, path = item.rpartition("=")
        models[name or Path(path).stem.split("-")[0]] = path
    return models


def mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarise(runs: list[dict], fp32: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """Rows (model, source, size, keep) with mean/sd drop, and gap-closed rows per model/size."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["source"], run["size"], run["keep"]), []).append(run)
    rows = []
    for (model, source, size, keep), items in groups.items():
        drop_mean, drop_sd = mean_sd([r["drop"] for r in items])
        int8_mean, _ = mean_sd([r["int8_accuracy"] for r in items])
        rows.append({"model": model, "source": source, "size": size, "keep": keep, "seeds": len(items),
                     "fp32_accuracy": fp32[model], "int8_accuracy_mean": int8_mean,
                     "drop_mean": drop_mean, "drop_sd": drop_sd})
    # gap closed = (drop_noise - drop_s) / (drop_noise - drop_real): 0 = as bad as noise, 1 = as good as real
    by_seed = {(r["model"], r["source"], r["size"], r["keep"], r["seed"]): r["drop"] for r in runs}
    gaps = []
    for (model, source, size, keep), items in groups.items():
        if source in ("real", "noise"):
            continue
        per_seed = []
        for run in items:
            noise = by_seed.get((model, "noise", size, 1.0, run["seed"]))
            real = by_seed.get((model, "real", size, 1.0, run["seed"]))
            if noise is not None and real is not None and abs(noise - real) > 1e-9:
                per_seed.append((noise - run["drop"]) / (noise - real))
        if per_seed:
            noise_d = [by_seed[(model, "noise", size, 1.0, r["seed"])] for r in items]
            real_d = [by_seed[(model, "real", size, 1.0, r["seed"])] for r in items]
            noise_m, real_m, drop_m = np.mean(noise_d), np.mean(real_d), np.mean([r["drop"] for r in items])
            # the ratio means nothing when noise and real calibration are not told apart by the seeds:
            # require their mean difference to exceed twice its standard error
            se = np.sqrt((np.var(noise_d, ddof=1) + np.var(real_d, ddof=1)) / len(items)) if len(items) > 1 else np.inf
            gaps.append({"model": model, "source": source, "size": size, "keep": keep,
                         "gap_closed_mean_over_seeds": float(np.mean(per_seed)),
                         "gap_closed_of_means": float((noise_m - drop_m) / (noise_m - real_m)) if noise_m != real_m else None,
                         "noise_minus_real": float(noise_m - real_m), "noise_minus_real_se": float(se),
                         "separable": bool(abs(noise_m - real_m) > 2 * se), "seeds": len(per_seed)})
    order = {s: i for i, s in enumerate(("real", "student", "teacher", "uniform", "noise-pixel", "noise"))}
    rows.sort(key=lambda r: (r["model"], r["size"], order.get(r["source"], 9), -r["keep"]))
    gaps.sort(key=lambda g: (g["model"], g["size"], order.get(g["source"], 9), -g["keep"]))
    return rows, gaps


def markdown(rows: list[dict], gaps: list[dict]) -> str:
    lines = ["| model | FP32 % | source | keep | size | seeds | INT8 % (mean) | drop, points (mean ± sd) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['fp32_accuracy']:.2f} | {r['source']} | {r['keep']:g} | {r['size']} | {r['seeds']} "
                     f"| {r['int8_accuracy_mean']:.2f} | {r['drop_mean']:.2f} ± {r['drop_sd']:.2f} |")
    if gaps:
        lines += ["", "gap closed = (drop_noise - drop_source) / (drop_noise - drop_real): 1 = as good as real, 0 = as bad as noise; "
                  "'not separable' when drop_noise - drop_real is under twice its standard error over the seeds.", "",
                  "| model | source | keep | size | noise − real, points (± se) | gap closed (mean over seeds) | gap closed (of means) |",
                  "|---|---|---|---|---|---|---|"]
        for g in gaps:
            of_means = "n/a" if g["gap_closed_of_means"] is None else f"{g['gap_closed_of_means']:.2f}"
            mean_over = f"{g['gap_closed_mean_over_seeds']:.2f}"
            if not g["separable"]:
                mean_over, of_means = f"not separable ({mean_over})", f"not separable ({of_means})"
            lines.append(f"| {g['model']} | {g['source']} | {g['keep']:g} | {g['size']} | {g['noise_minus_real']:.2f} ± "
                         f"{g['noise_minus_real_se']:.2f} | {mean_over} | {of_means} |")
    return "\n".join(lines)


def wide_table(rows: list[dict], gaps: list[dict]) -> str:
    """One row per model and size: the mean drop of every source side by side, then the issue's two
    acceptance figures for the student (gap closed, of the means; student − real in points)."""
    sources = [s for s in ("real", "student", "teacher", "noise", "uniform", "noise-pixel") if any(r["source"] == s for r in rows)]
    keeps = sorted({r["keep"] for r in rows if r["source"] in SYNTHETIC and r["keep"] < 1}, reverse=True)
    columns = sources + [f"student keep {k:g}" for k in keeps if any(r["source"] == "student" and r["keep"] == k for r in rows)]
    lines = ["| model | FP32 % | size | " + " | ".join(columns) + " | student − real | student gap closed |",
             "|---|---:|---:|" + "---:|" * len(columns) + "---:|---:|"]
    for model, size in sorted({(r["model"], r["size"]) for r in rows}):
        cells = {}
        for r in rows:
            if (r["model"], r["size"]) == (model, size):
                cells[r["source"] if r["keep"] == 1.0 else f"{r['source']} keep {r['keep']:g}"] = r
        fp32 = next(iter(cells.values()))["fp32_accuracy"]
        values = [f"{cells[c]['drop_mean']:.2f}" if c in cells else "" for c in columns]
        student, real = cells.get("student"), cells.get("real")
        diff = f"{student['drop_mean'] - real['drop_mean']:+.2f}" if student and real else ""
        gap = next((g for g in gaps if (g["model"], g["size"], g["source"], g["keep"]) == (model, size, "student", 1.0)), None)
        closed = "" if gap is None or gap["gap_closed_of_means"] is None else f"{gap['gap_closed_of_means']:.2f}"
        if gap is not None and not gap["separable"]:
            closed = f"n.s. ({closed})"
        lines.append(f"| {model} | {fp32:.2f} | {size} | " + " | ".join(values) + f" | {diff} | {closed} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars (one group per model and size, one bar per source) with ±sd whiskers, Pillow only."""
    from PIL import Image, ImageDraw

    from distilgan.utils.atomic import atomic_path

    groups = sorted({(r["model"], r["size"]) for r in rows})
    bars = [(r["source"], r["keep"]) for r in rows]
    kinds = list(dict.fromkeys(bars))
    if not groups:
        return
    top = max(max(r["drop_mean"] + r["drop_sd"] for r in rows), 0.1)
    bottom = min(min(r["drop_mean"] - r["drop_sd"] for r in rows), 0.0)
    bar_w, gap, left, height, plot_h = 18, 30, 60, 420, 320
    width = left + len(groups) * (len(kinds) * bar_w + gap) + 170
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    y_of = lambda v: 40 + plot_h * (top - v) / (top - bottom)  # noqa: E731
    for tick in np.linspace(bottom, top, 6):
        draw.line([(left - 4, y_of(tick)), (width - 170, y_of(tick))], fill=(225, 225, 225))
        draw.text((5, y_of(tick) - 6), f"{tick:.2f}", fill="black")
    draw.line([(left, y_of(0)), (width - 170, y_of(0))], fill="black")
    draw.text((left, 10), "INT8 accuracy drop (points), mean ± sd over seeds", fill="black")
    for g, (model, size) in enumerate(groups):
        x0 = left + g * (len(kinds) * bar_w + gap) + gap // 2
        for k, (source, keep) in enumerate(kinds):
            row = next((r for r in rows if (r["model"], r["size"], r["source"], r["keep"]) == (model, size, source, keep)), None)
            if row is None:
                continue
            x = x0 + k * bar_w
            colour = COLOURS.get(source, (0, 150, 136))
            if keep < 1:
                colour = tuple(min(255, c + 80) for c in colour)
            y0, y1 = sorted((y_of(0), y_of(row["drop_mean"])))
            draw.rectangle([x, y0, x + bar_w - 3, y1], fill=colour)
            cx = x + (bar_w - 3) // 2
            draw.line([(cx, y_of(row["drop_mean"] - row["drop_sd"])), (cx, y_of(row["drop_mean"] + row["drop_sd"]))], fill="black")
        draw.text((x0, 40 + plot_h + 10), f"{model}", fill="black")
        draw.text((x0, 40 + plot_h + 24), f"n={size}", fill="black")
    for k, (source, keep) in enumerate(kinds):
        colour = COLOURS.get(source, (0, 150, 136))
        if keep < 1:
            colour = tuple(min(255, c + 80) for c in colour)
        y = 50 + 18 * k
        draw.rectangle([width - 160, y, width - 148, y + 12], fill=colour)
        draw.text((width - 142, y), source + (f" keep {keep:g}" if keep < 1 else ""), fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="name=checkpoint (folder or .th), comma-separated; default: shared ResNet-20/56")
    parser.add_argument("--sources", default="real,student,teacher,noise,uniform", help="comma-separated calibration sources")
    parser.add_argument("--sizes", default="100,300,1000", help="calibration set sizes")
    parser.add_argument("--seeds", default="0,1,2", help="seeds (calibration subset / noise / generator)")
    parser.add_argument("--keep", default="1.0", help="confidence-filter fractions for student/teacher, e.g. 1.0,0.5")
    parser.add_argument("--student", help="student checkpoint folder (source 'student')")
    parser.add_argument("--teacher", help="teacher spec (source 'teacher')")
    parser.add_argument("--data", help="dataset for real calibration (train) and evaluation (test); default: shared CIFAR-10 JPEG zip")
    parser.add_argument("--eval-size", type=int, default=0, help="evaluate on this many test images (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="OpenVINO inference threads (0 = all cores)")
    parser.add_argument("--activation-ranges", default="mean-minmax", help="NNCF activation range estimator: mean-minmax "
                        "(NNCF's default) | minmax | median-minmax (one per study JSON)")
    parser.add_argument("--throughput", action="store_true", help="also time FP32 vs INT8 at batch 64 once per model")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs from the JSON")
    parser.add_argument("--out", default=str(RESULTS / "calibration_study.json"), help="result JSON (the PNG goes beside it)")
    parser.add_argument("--combine", help="comma-separated study JSONs to merge into --out (no new runs)")
    args = parser.parse_args()
    if args.combine:
        return combine(args.combine.split(","), Path(args.out))

    import torch

    from distilgan.calibration import ptq
    from distilgan.calibration.sources import calibration_set, source_available
    from distilgan.data.datasets import open_dataset
    from distilgan.models.classifiers import load_classifier
    from distilgan.utils.atomic import atomic_write_json
    from distilgan.utils.shared_data import shared_path

    if args.threads:
        torch.set_num_threads(args.threads)
    models = parse_models(args.models)
    sources = [s for s in args.sources.split(",") if s]
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    keeps = [float(k) for k in args.keep.split(",")]
    data = args.data or str(shared_path("datasets", "cifar10", "cifar10-jpeg.zip") or "cifar10")
    notes = []
    for source in list(sources):
        reason = source_available(source, args.student, args.teacher)
        if reason:
            notes.append(f"skipped source {source}: {reason}")
            sources.remove(source)
    for note in notes:
        print(note)

    out = Path(args.out)
    previous = json.loads(out.read_text()) if args.resume and out.exists() else {}
    if previous and previous.get("protocol", {}).get("activation_ranges", "mean-minmax") != args.activation_ranges:
        raise SystemExit(f"{out} was run with other activation ranges (give another --out for --activation-ranges {args.activation_ranges})")
    done = {(r["model"], r["source"], r["size"], r["seed"], r["keep"]): r for r in previous.get("runs", [])}
    started = time.time()
    test = open_dataset(data, split="test")
    if args.eval_size:
        test = test.take(args.eval_size, seed=0)
    train = open_dataset(data, split="train") if "real" in sources else None
    print(f"data: {test.source} test={len(test)} train={len(train) if train else 0} ({time.time() - started:.0f} s)")

    result = {"protocol": ptq.protocol({"data": test.describe(), "eval_images": len(test), "threads": args.threads or os.cpu_count(),
                                        "noise_definition": "N(0,1) in normalised input space (float, unclipped)",
                                        "activation_ranges": args.activation_ranges,
                                        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}),
              "models": {}, "runs": [], "notes": notes}
    # runs of the resumed JSON outside this invocation's grid (other models, sources, sizes, keeps) are kept
    grid = {(name, source, size, seed, keep) for name in models for source in sources for size in sizes
            for keep in (keeps if source in SYNTHETIC else [1.0]) for seed in seeds}
    result["runs"] = [run for key, run in done.items() if key not in grid]
    result["models"] = {run["model"]: previous["models"][run["model"]] for run in result["runs"]}
    fp32: dict[str, float] = {}
    for name, path in models.items():
        classifier = load_classifier(path)
        test_inputs = classifier.preprocess(test.images)
        ov_model = ptq.to_openvino(classifier)
        fp32_compiled = ptq.compile_model(ov_model, args.threads or None)
        fp32[name] = ptq.accuracy(fp32_compiled, test_inputs, test.labels)
        result["models"][name] = {**previous.get("models", {}).get(name, {}), "path": str(path), "fp32_accuracy": fp32[name],
                                  "parameters": classifier.num_parameters()}
        print(f"{name}: FP32 {fp32[name]:.2f}% on {len(test)} test images")
        if previous.get("models", {}).get(name, {}).get("fp32_accuracy") != fp32[name]:  # another model: its old runs are stale
            result["runs"] = [run for run in result["runs"] if run["model"] != name]
        for source in sources:
            for size in sizes:
                for keep in keeps if source in SYNTHETIC else [1.0]:
                    for seed in seeds:
                        key = (name, source, size, seed, keep)
                        if key in done and previous.get("models", {}).get(name, {}).get("fp32_accuracy") == fp32[name]:
                            result["runs"].append(done[key])
                            continue
                        t0 = time.time()
                        calib = calibration_set(source, classifier, size, seed, data=train, student=args.student,
                                                teacher=args.teacher, keep=keep)
                        int8_model = ptq.quietly(ptq.quantize, ov_model, calib.inputs, activation_ranges=args.activation_ranges)
                        int8_compiled = ptq.compile_model(int8_model, args.threads or None)
                        int8 = ptq.accuracy(int8_compiled, test_inputs, test.labels)
                        run = {"model": name, "source": source, "size": size, "seed": seed, "keep": keep,
                               "int8_accuracy": int8, "drop": fp32[name] - int8, "seconds": time.time() - t0,
                               "calibration": calib.description}
                        result["runs"].append(run)
                        print(f"  {source:<11} size={size:<5} keep={keep:g} seed={seed}: INT8 {int8:.2f}% "
                              f"drop {run['drop']:+.2f} ({run['seconds']:.0f} s)", flush=True)
                        atomic_write_json(out, result)
        if args.throughput:
            calib = calibration_set("noise", classifier, 64, 0)
            int8_compiled = ptq.compile_model(ptq.quietly(ptq.quantize, ov_model, calib.inputs,
                                                          activation_ranges=args.activation_ranges), args.threads or None)
            speed = ptq.throughput({"fp32": fp32_compiled, "int8": int8_compiled}, classifier.resolution)
            result["models"][name]["throughput_images_per_s"] = speed
            print(f"  throughput batch 64: FP32 {speed['fp32']:.0f} img/s, INT8 {speed['int8']:.0f} img/s "
                  f"(x{speed['int8'] / speed['fp32']:.2f}; shared CPU, load {os.getloadavg()[0]:.1f})")

    finish(result, out, started)
    return 0


def finish(result: dict, out: Path, started: float) -> None:
    """Summarise the runs into the table and gap-closed rows; write the JSON and the PNG; print."""
    from distilgan.utils.atomic import atomic_write_json

    fp32 = {name: model["fp32_accuracy"] for name, model in result["models"].items()}
    rows, gaps = summarise(result["runs"], fp32)
    result.update(table=rows, gap_closed=gaps, seconds=time.time() - started, load_average=os.getloadavg()[0],
                  run_seconds_total=sum(r["seconds"] for r in result["runs"]))  # includes runs reused by --resume
    atomic_write_json(out, result)
    plot(rows, out.with_suffix(".png"))
    print()
    print(markdown(rows, gaps))
    print("\nMean drop (points) per source; 'n.s.': noise and real not separable over the seeds:\n")
    print(wide_table(rows, gaps))
    print(f"\n{len(result['runs'])} runs ({result['run_seconds_total'] / 60:.1f} min of calibration + evaluation); this invocation "
          f"{result['seconds'] / 60:.1f} min; wrote {out} and {out.with_suffix('.png')}")


def combine(paths: list[str], out: Path) -> int:
    """Merge studies run as separate processes (e.g. one per model, in parallel) into one table."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    ranges = {part["protocol"].get("activation_ranges", "mean-minmax") for part in parts}
    if len(ranges) > 1:
        raise SystemExit(f"the studies used different activation ranges ({', '.join(sorted(ranges))}): combine like with like")
    result = {"protocol": parts[0]["protocol"], "models": {}, "runs": [], "notes": [], "combined_from": paths}
    for path, part in zip(paths, parts):
        clash = set(part["models"]) & set(result["models"])
        if clash:
            raise SystemExit(f"{path} repeats model(s) {', '.join(sorted(clash))} (combine studies of different models)")
        result["models"].update(part["models"])
        result["runs"] += part["runs"]
        result["notes"] += [n for n in part.get("notes", []) if n not in result["notes"]]
    finish(result, out, time.time())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
