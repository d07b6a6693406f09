"""``distilgan calibrate``: INT8 post-training quantization of a classifier with OpenVINO + NNCF,
calibrated on real or synthetic images, with FP32 vs INT8 accuracy and throughput."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from distilgan.errors import UserError
from distilgan.utils import argtypes

DESCRIPTION = """\
Quantize a classifier to INT8 (OpenVINO IR) with calibration images from real data, a distilled
student, a teacher, noise or a folder, and measure what it costs: top-1 accuracy FP32 vs INT8 on the
test split of --data, and images/s at batch 64. Writes OUT/model_int8.xml+.bin, OUT/calibration.json
(protocol and results) and OUT/calibration_images.png. Needs: pip install distilgan[deploy].

Sources: real (class-balanced subset of the train split), student (--student CKPT), teacher
(--teacher SPEC), noise (N(0,1) in the normalised input space), noise-pixel (the same Gaussian as
clipped uint8 pixels), uniform (uniform random pixels 0..255), or a FOLDER of images.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from distilgan.calibration.ptq import ACTIVATION_RANGES  # a light import: OpenVINO/NNCF load inside its functions

    parser = subparsers.add_parser(
        "calibrate",
        help="INT8-quantize a classifier with real or synthetic calibration images (OpenVINO + NNCF)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="classifier: shipped name (e.g. cifar10-vgg11_bn_x0_25), checkpoint folder (train-classifier) or CIFAR ResNet .th file")
    parser.add_argument("--calibration", default="real", metavar="SOURCE",
                        help="real | student | teacher | noise | noise-pixel | uniform | FOLDER (default: real)")
    parser.add_argument("--size", type=argtypes.positive_int, default=300, help="number of calibration images (default: 300)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the calibration subset, noise or generator (default: 0)")
    parser.add_argument("--keep", type=argtypes.fraction, default=1.0,
                        help="student/teacher: draw size/KEEP images, keep the classifier's most confident KEEP fraction per class")
    parser.add_argument("--accuracy-control", type=argtypes.nonneg_float, default=None, metavar="MAX_DROP",
                        help="use nncf.quantize_with_accuracy_control: at most MAX_DROP points lost on a real validation subset")
    parser.add_argument("--activation-ranges", default="auto", choices=["auto", *ACTIVATION_RANGES],
                        help="how per-image activation min/max become INT8 ranges: auto (default: minmax for generated "
                             "sources, student and teacher, NNCF's mean-minmax for the others), mean-minmax (mean over "
                             "images, NNCF's default), minmax (over all images) or median-minmax; see docs/calibration.md")
    parser.add_argument("--validation-size", type=argtypes.positive_int, default=1000,
                        help="train-split images (disjoint from real calibration) for --accuracy-control (default: 1000)")
    parser.add_argument("--student", help="student checkpoint folder (for --calibration student)")
    parser.add_argument("--teacher", help="teacher spec, e.g. onnx:teacher.onnx (for --calibration teacher)")
    parser.add_argument("--data", default="cifar10",
                        help="dataset: its test split is evaluated, its train split gives real images (default: cifar10, the cached copy)")
    parser.add_argument("--eval-size", type=argtypes.nonneg_int, default=0, help="evaluate on a seeded subset of this many test images (0 = all)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the FP32 vs INT8 images/s measurement")
    parser.add_argument("--threads", type=argtypes.nonneg_int, default=0, help="OpenVINO inference threads (0 = all cores)")
    parser.add_argument("--out", default=None, help="output folder (default: calibrated-<model>-<source>)")
    parser.set_defaults(func=run)


def _check_model_path(spec: str) -> None:
    """A --model that is clearly a path (a separator or a weights suffix) and is missing is "not
    found", not an "unknown classifier" name."""
    path = Path(spec).expanduser()
    looks_like_path = "/" in str(spec) or "\\" in str(spec) or path.suffix in (".th", ".pth", ".pt", ".tar", ".safetensors")
    if looks_like_path and not path.exists():
        raise UserError(f"classifier not found: {spec} (check the path given to --model)")


GENERATED_SOURCES = ("student", "teacher")


def resolve_activation_ranges(choice: str, source: str) -> str:
    """``auto``: ``minmax`` for generated calibration images, NNCF's ``mean-minmax`` for the others.

    NNCF sets a per-tensor activation range to the mean over images of each image's min and max. A
    generator's images are smoother than real ones (the placeholder student's per-image maxima were
    0.80x the real images' on ResNet-20), so that mean clips real activations; the largest range over
    all images does not (docs/calibration.md, "Activation ranges": within 0.15 points of real
    calibration on all five families with ``minmax``, 0.25-5.6 points worse with the mean).
    """
    if choice != "auto":
        return choice
    chosen = "minmax" if source in GENERATED_SOURCES else "mean-minmax"
    if source in GENERATED_SOURCES:
        print(f"calibrate: activation ranges minmax (auto: {source} images are smoother than real ones, and NNCF's "
              "per-image mean range would clip real activations; --activation-ranges mean-minmax for NNCF's default)")
    return chosen


def run(args: argparse.Namespace) -> int:
    from distilgan.calibration.sources import BUILTIN_SOURCES
    from distilgan.utils.paths import check_output_dir

    source = args.calibration
    # the same default name as below (an image folder is the source "folder")
    stem = Path(str(args.model).rstrip("/")).name.split(".")[0]
    default_out = f"calibrated-{stem}-{source if source in BUILTIN_SOURCES else 'folder'}"
    check_output_dir(args.out or default_out, "--out", replace=True)  # before quantizing and evaluating
    argtypes.refuse_unless(args, "--keep", source in ("student", "teacher"),
                           f"filters generated images (--calibration student or teacher), not --calibration {source}")
    argtypes.refuse_unless(args, "--student", source == "student", f"is the generator of --calibration student, not {source}")
    argtypes.refuse_unless(args, "--teacher", source == "teacher", f"is the generator of --calibration teacher, not {source}")
    argtypes.refuse_unless(args, "--validation-size", args.accuracy_control is not None,
                           "sizes the validation set of --accuracy-control, which is not given")
    _check_model_path(args.model)
    from distilgan.utils.extras import need

    need("openvino", "calibrate")
    need("nncf", "calibrate")
    import numpy as np

    from distilgan.calibration import ptq
    from distilgan.calibration.sources import BUILTIN_SOURCES, balanced_subset, calibration_set
    from distilgan.data.datasets import open_dataset
    from distilgan.models.classifiers import load_classifier
    from distilgan.utils.atomic import atomic_dir, atomic_write_json
    from distilgan.utils.images import save_grid

    if args.size < 1:
        raise UserError(f"--size must be >= 1, got {args.size}")
    if args.accuracy_control is not None and args.accuracy_control < 0:
        raise UserError(f"--accuracy-control must be a drop in points >= 0, got {args.accuracy_control}")
    if args.calibration not in BUILTIN_SOURCES and not Path(args.calibration).exists():
        raise UserError(f"unknown calibration source '{args.calibration}' (use {', '.join(BUILTIN_SOURCES)} or an existing image folder)")
    started = time.time()
    classifier = load_classifier(args.model)
    test = open_dataset(args.data, split="test")
    if test.num_classes != classifier.num_classes:
        raise UserError(f"{args.data} has {test.num_classes} classes, the classifier {classifier.num_classes} (use matching data)")
    if args.eval_size:
        test = test.take(min(args.eval_size, len(test)), seed=0)
    test_inputs = classifier.preprocess(test.images)  # also checks the resolution
    needs_train = args.calibration == "real" or args.accuracy_control is not None
    train = open_dataset(args.data, split="train") if needs_train else None

    calib = calibration_set(args.calibration, classifier, args.size, args.seed, data=train,
                            student=args.student, teacher=args.teacher, keep=args.keep)
    ov_model = ptq.to_openvino(classifier)
    fp32_compiled = ptq.compile_model(ov_model, args.threads or None)
    fp32 = ptq.accuracy(fp32_compiled, test_inputs, test.labels, progress="FP32 eval")
    args.activation_ranges_auto = args.activation_ranges == "auto"
    args.activation_ranges = resolve_activation_ranges(args.activation_ranges, source)
    method = "nncf.quantize"
    if args.accuracy_control is None:
        int8_model = ptq.quantize(ov_model, calib.inputs, activation_ranges=args.activation_ranges)
    else:
        # validation: real train images never used for calibration
        exclude = balanced_subset(train.labels, args.size, train.num_classes, args.seed) if args.calibration == "real" else []
        pool = np.setdiff1d(np.arange(len(train)), exclude)
        rows = pool[balanced_subset(train.labels[pool], min(args.validation_size, len(pool)), train.num_classes, args.seed + 1)]
        int8_model = ptq.quantize_with_accuracy_control(
            ov_model, calib.inputs, classifier.preprocess(train.images[rows]), train.labels[rows], args.accuracy_control,
            activation_ranges=args.activation_ranges,
        )
        method = f"nncf.quantize_with_accuracy_control(max_drop={args.accuracy_control} points, {len(rows)} real train images)"
    int8_compiled = ptq.compile_model(int8_model, args.threads or None)
    int8 = ptq.accuracy(int8_compiled, test_inputs, test.labels, progress="INT8 eval")
    speed = None
    if not args.no_throughput:
        speed = ptq.throughput({"fp32": fp32_compiled, "int8": int8_compiled}, classifier.resolution)

    stem = Path(str(args.model).rstrip("/")).name.split(".")[0]
    out = Path(args.out or f"calibrated-{stem}-{calib.source}")
    results = {
        "fp32_accuracy": fp32,
        "int8_accuracy": int8,
        "drop_points": fp32 - int8,
        "eval_images": len(test),
        "throughput_images_per_s": speed,
        "speedup": speed["int8"] / speed["fp32"] if speed else None,
        "load_average": os.getloadavg()[0],
        "seconds": time.time() - started,
    }
    protocol = ptq.protocol({
        "model": str(args.model),
        "architecture": classifier.config["architecture"],
        "classifier_config": {k: v for k, v in classifier.config.items() if k != "class_names"},
        "calibration": calib.description,
        "method": method,
        "activation_ranges": args.activation_ranges,
        "activation_ranges_chosen_by": "auto" if args.activation_ranges_auto else "--activation-ranges",
        "data": test.describe(),
        "threads": args.threads or os.cpu_count(),
    })
    with atomic_dir(out) as tmp:
        ptq.save_ir(int8_model, tmp / "model_int8.xml")
        atomic_write_json(tmp / "calibration.json", {"protocol": protocol, "results": results}, fsync=False)
        if calib.images is not None:
            save_grid(calib.images[:100], tmp / "calibration_images.png", nrow=10)
    print(f"FP32 top-1 {fp32:.2f}%  INT8 top-1 {int8:.2f}%  drop {fp32 - int8:+.2f} points  "
          f"({len(test)} test images of {test.source}; calibration {calib.source} x{len(calib)}, seed {args.seed})")
    if speed:
        print(f"throughput batch 64: FP32 {speed['fp32']:.0f} img/s, INT8 {speed['int8']:.0f} img/s, "
              f"x{results['speedup']:.2f} (load average {results['load_average']:.1f})")
    print(f"wrote {out}/model_int8.xml and {out}/calibration.json")
    return 0
