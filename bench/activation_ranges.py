"""Why a calibration source gives narrow or wide INT8 activation ranges: per-image activation maxima.

    .venv/bin/python bench/activation_ranges.py [--model CKPT] [--sources real,student,teacher,noise,uniform]
        [--size 300] [--seed 0] [--student CKPT] [--teacher SPEC] [--data DATASET]

NNCF's default range for a per-tensor activation quantizer is the MEAN over calibration images of each
image's max (and min); ``minmax`` takes the max over images. For every conv output of the classifier this
measures both, per source, relative to the mean per-image max of REAL images (the range the test data
needs): a ratio under 1 means real activations get clipped. Prints the median and worst ratio over
layers and writes bench/results/activation_ranges.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def per_image_maxima(classifier, inputs: np.ndarray) -> np.ndarray:
    """(conv layers, images) array of each conv output's maximum per image."""
    import torch

    maxima: list[torch.Tensor] = []
    convs = [m for m in classifier.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda _m, _i, out: maxima.append(out.flatten(1).amax(1))) for m in convs]
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), 100):
                classifier(torch.from_numpy(inputs[start : start + 100]))
    finally:
        for hook in hooks:
            hook.remove()
    chunks = len(maxima) // len(convs)  # forward order: chunk 0 layers 0..L-1, chunk 1 ...
    return np.stack([torch.cat([maxima[c * len(convs) + k] for c in range(chunks)]).numpy() for k in range(len(convs))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="classifier (default: the shared ResNet-20)")
    parser.add_argument("--sources", default="real,student,teacher,noise,uniform")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student", default="cifar10-student")
    parser.add_argument("--teacher", default="builtin:cifar10-teacher")
    parser.add_argument("--data", help="dataset (default: the shared CIFAR-10 JPEG zip)")
    parser.add_argument("--out", default=str(RESULTS / "activation_ranges.json"))
    args = parser.parse_args()

    from distilgan.calibration.sources import calibration_set
    from distilgan.data.datasets import open_dataset
    from distilgan.models.classifiers import load_classifier
    from distilgan.utils.atomic import atomic_write_json
    from distilgan.utils.shared_data import shared_path

    model = args.model or str(next(shared_path("weights", "cifar10-resnet").glob("resnet20-*.th")))
    data = args.data or str(shared_path("datasets", "cifar10", "cifar10-jpeg.zip"))
    classifier = load_classifier(model).eval()
    train = open_dataset(data, split="train")
    maxima = {}
    for source in ["real"] + [s for s in args.sources.split(",") if s and s != "real"]:
        calib = calibration_set(source, classifier, args.size, args.seed, data=train, student=args.student, teacher=args.teacher)
        maxima[source] = per_image_maxima(classifier, calib.inputs)
    real_mean = maxima["real"].mean(1)
    rows = []
    print(f"{'source':<10} {'mean of max / real':>20} {'worst layer':>12} {'max of max / real':>18}")
    for source, m in maxima.items():
        mean_ratio, max_ratio = m.mean(1) / real_mean, m.max(1) / real_mean
        rows.append({"source": source, "mean_of_max_ratio_median": float(np.median(mean_ratio)),
                     "mean_of_max_ratio_min": float(mean_ratio.min()), "max_of_max_ratio_median": float(np.median(max_ratio)),
                     "layers": int(len(m))})
        print(f"{source:<10} {np.median(mean_ratio):>20.2f} {mean_ratio.min():>12.2f} {np.median(max_ratio):>18.2f}")
    atomic_write_json(Path(args.out), {"model": model, "data": data, "size": args.size, "seed": args.seed,
                                       "what": "per-image max of every conv output; ratios to the mean per-image max of real "
                                               "images, median (and min) over layers", "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
