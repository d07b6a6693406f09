"""The edit-distillation study of issue 18: a class edit of real images by the slow path (inversion,
``distilgan invert``), by the encoder alone, and by the feed-forward student, judged alike.

    # 1. the real test images of each edit's source class, as files for `distilgan invert --in`
    python bench/edit_study.py --data ../shared/datasets/cifar10/cifar10-jpeg.zip --edit automobile:truck \\
        --export-inputs runs/edit/inputs
    # 2. the slow path and the encoder (resumable, long):  distilgan invert --in runs/edit/inputs/automobile ...
    # 3. the table
    python bench/edit_study.py --data ... --edit automobile:truck --edit horse:deer \\
        --student plain=runs/i2i/best --student unfiltered=runs/i2i-nofilter/best \\
        --method invert=runs/edit/invert-{source} --method encoder=runs/edit/encoder-{source} \\
        --judge ../shared/weights/cifar10-resnet/resnet56-4bfd9763.th [--n 1000] [--out bench/results/edit_study.json]

Per edit (source -> target) and method, on the first ``--n`` CIFAR-10 *test* images of the source class
(real photographs: no method was trained on them):

* flip rate: the judge (ResNet-56, not the pair filter's classifier) recognises the target class;
* FID of the edited images against the real test images of the target class (Inception pool
  features, n vs 1,000: a small-sample FID, comparable between the rows of one table only);
* content kept: mean cosine similarity of Inception features of input and edited image, and PSNR;
* seconds per image: the method's own record (``invert.json``) for the optimisation paths; for a
  student (a torch checkpoint, or an ONNX/OpenVINO export such as INT8), on ``--threads`` threads, uint8
  in and out as ``translate`` runs it, batch 1 (median of 50) and batch 64 (per image), measured here.

"input (no edit)" is the floor: the unedited images scored the same way. Targets (issue 18): the
student >= 100x faster than the optimisation, flip rate within 10 points of it, FID <= 1.2x its.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_facts  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "edit_study.json"
SPEEDUP_TARGET, FLIP_POINTS, FID_RATIO = 100.0, 10.0, 1.2
STRIP = 8  # images per edit in the --strip picture


def labelled(text: str, flag: str) -> tuple[str, str]:
    label, sep, value = text.partition("=")
    if not sep or not label or not value:
        raise SystemExit(f"{flag} takes LABEL=VALUE, got {text!r}")
    return label, value


def class_images(dataset: Any, label: int, n: int) -> np.ndarray:
    return dataset.images[np.flatnonzero(dataset.labels == label)[:n]]


def export_inputs(dataset: Any, sources: list[tuple[int, str]], n: int, folder: Path) -> None:
    from distilgan.utils.images import save_png

    for label, name in sources:
        for i, image in enumerate(class_images(dataset, label, n)):
            save_png(image, folder / name / input_name(i))
        print(f"wrote {min(n, int((dataset.labels == label).sum()))} {name} test images to {folder / name}")


def read_method(folder: Path, target: str, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(edited uint8 images in input order, invert.json) of an `invert` folder of the exported inputs."""
    from PIL import Image

    record = json.loads((folder / "invert.json").read_text())
    names = record["settings"]["images"][:n]
    if names != [input_name(i) for i in range(len(names))]:
        raise SystemExit(f"{folder} inverted other files than --export-inputs writes ({names[:2]} ...)")
    images = np.stack([np.asarray(Image.open(folder / target / name).convert("RGB")) for name in names])
    return images, record


def input_name(index: int) -> str:
    return f"test-{index:04d}.png"


def student_outputs(checkpoint: str, images: np.ndarray, edit_name: str, threads: int) -> tuple[np.ndarray, float, float]:
    """(outputs, seconds per image at batch 1 (median of 50), at batch 64) of a translator, uint8 in and
    out: a torch checkpoint (fp32) or an export (ONNX Runtime / OpenVINO, e.g. INT8), as `translate` runs it."""
    from distilgan.commands.translate import exported_backend, torch_backend
    from distilgan.deploy.runtime import is_export

    backend = (exported_backend(checkpoint, edit_name, threads) if is_export(checkpoint)
               else torch_backend(checkpoint, "cpu", edit_name))
    outputs = np.concatenate([backend.run(images[s:s + 64]) for s in range(0, len(images), 64)])
    batch64 = np.resize(images, (64,) + images.shape[1:])  # 64 images even when fewer are given
    for _ in range(5):
        backend.run(images[:1])
    single = []
    for _ in range(50):
        began = time.perf_counter()
        backend.run(images[:1])
        single.append(time.perf_counter() - began)
    backend.run(batch64)
    began = time.perf_counter()
    for _ in range(5):
        backend.run(batch64)
    return outputs, float(np.median(single)), float((time.perf_counter() - began) / (5 * 64))


def scores(network: Any, judge: Any, inputs_features: np.ndarray, inputs: np.ndarray, edited: np.ndarray,
           target: int, target_features: np.ndarray) -> dict[str, float | None]:
    from distilgan.metrics.class_agreement import judge_probs
    from distilgan.metrics.fid import fid_between_features
    from distilgan.metrics.network import extract

    features = extract(network, edited, progress=False)[0]
    flip = float((judge_probs(judge, edited).argmax(1) == target).mean())
    a = inputs_features[: len(features)]
    cosine = float(np.mean(np.sum(a * features, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(features, axis=1))))
    mse = np.mean((inputs[: len(edited)].astype(np.float64) - edited.astype(np.float64)) ** 2, axis=(1, 2, 3))
    changed = mse > 0  # an unchanged image has no PSNR; None when no image changed (the floor row)
    psnr = float(np.mean(10 * np.log10(255.0**2 / mse[changed]))) if changed.any() else None
    return {"n": int(len(edited)), "flip": flip, "fid_target": fid_between_features(features, target_features),
            "content_cosine": cosine, "psnr_to_input": psnr}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 (the test split is read)")
    parser.add_argument("--edit", action="append", required=True, metavar="SOURCE:TARGET")
    parser.add_argument("--n", type=int, default=1000, help="source-class test images per edit (default 1000)")
    parser.add_argument("--export-inputs", metavar="DIR", help="write each source class's test images to DIR/<class>/ and stop")
    parser.add_argument("--student", action="append", default=[], metavar="LABEL=CHECKPOINT",
                        help="a translator checkpoint, or an export of one (ONNX/OpenVINO, e.g. INT8)")
    parser.add_argument("--method", action="append", default=[], metavar="LABEL=DIR",
                        help="an `invert` output folder; {source} and {target} are replaced by the edit's classes")
    parser.add_argument("--judge", default="cifar10-resnet56", help="classifier judging the flip rate")
    parser.add_argument("--baseline", default="invert", help="the --method the students are held against (default invert)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--strip", metavar="FILE.png", help="also save, per edit, the first 8 images as rows: input, "
                        "each method, each student (for a person to look at)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from distilgan.data.datasets import open_dataset
    from distilgan.metrics.class_agreement import load_judge
    from distilgan.metrics.network import extract, load_network
    from distilgan.store.pairs import parse_edits

    test = open_dataset(args.data, "test")
    edits = parse_edits(args.edit, test.class_names, test.num_classes)
    if args.export_inputs:
        sources = sorted({(e["source"], test.class_names[e["source"]]) for e in edits})
        export_inputs(test, sources, args.n, Path(args.export_inputs))
        return 0
    network, (judge, judge_name) = load_network(), load_judge(args.judge)
    rows: list[dict[str, Any]] = []
    strip_rows: list[np.ndarray] = []
    for edit in edits:
        source, target = test.class_names[edit["source"]], test.class_names[edit["target"]]
        methods = {}
        for label, pattern in map(lambda m: labelled(m, "--method"), args.method):
            folder = Path(pattern.format(source=source, target=target))
            if not (folder / "invert.json").is_file():
                print(f"skip {label} for {edit['name']}: no {folder / 'invert.json'}")
                continue
            methods[label] = read_method(folder, target, args.n)
        # every row on the same images: as many as the method with the fewest has (small-sample FID is
        # biased upwards, so rows of different sizes would not compare)
        n = min([args.n] + [len(images) for images, _ in methods.values()])
        inputs = class_images(test, edit["source"], n)
        inputs_features = extract(network, inputs, progress=False)[0]
        target_features = extract(network, class_images(test, edit["target"], 10**6), progress=False)[0]
        common = {"edit": edit["name"], "source_images": int(len(inputs))}
        rows.append({**common, "method": "input (no edit)", "seconds_per_image": 0.0,
                     **scores(network, judge, inputs_features, inputs, inputs, edit["target"], target_features)})
        strip_rows.append(inputs[:STRIP])
        for label, (edited, record) in methods.items():
            strip_rows.append(edited[:STRIP])
            rows.append({**common, "method": label, "seconds_per_image": record.get("seconds_per_image"),
                         "threads": record.get("threads"), "steps": record["settings"]["inversion"]["steps"],
                         **scores(network, judge, inputs_features, inputs, edited[:n], edit["target"], target_features)})
        for label, checkpoint in map(lambda s: labelled(s, "--student"), args.student):
            edited, single, batch = student_outputs(checkpoint, inputs, edit["name"], args.threads)
            strip_rows.append(edited[:STRIP])
            rows.append({**common, "method": f"student {label}", "seconds_per_image": batch, "latency_b1_s": single,
                         "threads": [args.threads],
                         **scores(network, judge, inputs_features, inputs, edited, edit["target"], target_features)})
        baseline = next((r for r in rows if r["edit"] == edit["name"] and r["method"] == args.baseline), None)
        for r in rows:
            if baseline is not None and r["edit"] == edit["name"] and r["method"].startswith("student"):
                r["vs_" + args.baseline] = {
                    "speedup": baseline["seconds_per_image"] / r["seconds_per_image"],
                    "flip_points": 100 * (r["flip"] - baseline["flip"]), "fid_ratio": r["fid_target"] / baseline["fid_target"]}
                r["targets_met"] = bool(r["vs_" + args.baseline]["speedup"] >= SPEEDUP_TARGET
                                        and r["vs_" + args.baseline]["flip_points"] >= -FLIP_POINTS
                                        and r["vs_" + args.baseline]["fid_ratio"] <= FID_RATIO)
    print(f"\n| edit | method | n | flip rate | FID vs real target | content cos | PSNR to input | s / image | "
          f"vs {args.baseline}: speed-up, flip, FID ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        seconds = "-" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.4g}"
        versus = r.get("vs_" + args.baseline)
        against = ("-" if versus is None else f"{versus['speedup']:.0f}x, {versus['flip_points']:+.1f} pt, "
                   f"{versus['fid_ratio']:.2f} ({'met' if r['targets_met'] else 'not met'})")
        print(f"| {r['edit']} | {r['method']} | {r['n']} | {100 * r['flip']:.1f} % | {r['fid_target']:.1f} | "
              f"{r['content_cosine']:.3f} | {'-' if r['psnr_to_input'] is None else format(r['psnr_to_input'], '.2f')} | "
              f"{seconds} | {against} |")
    result = {"protocol": {"images": f"first {args.n} CIFAR-10 test images of each source class (fewer when a method "
                                     "has fewer: every row of an edit on the same images)", "judge": judge_name,
                           "psnr": "mean over images of each image's PSNR to its input",
                           "targets": {"speedup": SPEEDUP_TARGET, "flip_points": -FLIP_POINTS, "fid_ratio": FID_RATIO,
                                       "baseline": args.baseline},
                           "fid": "Inception pool features, edited vs all real test images of the target class",
                           "network": network.describe(), "threads": args.threads},
              "machine": machine_facts(), "rows": rows}
    if args.strip:
        from distilgan.utils.images import save_grid

        width = min(len(r) for r in strip_rows)
        save_grid(np.concatenate([r[:width] for r in strip_rows]), args.strip, nrow=width)
        print(f"wrote {args.strip}: per edit, rows input, {', '.join(m for m, _ in map(lambda m: labelled(m, '--method'), args.method))}, "
              f"{', '.join(l for l, _ in map(lambda s: labelled(s, '--student'), args.student))}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
