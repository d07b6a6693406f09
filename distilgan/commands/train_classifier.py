"""``distilgan train-classifier``: train a zoo classifier (ResNet, VGG, MobileNetV2, ShuffleNetV2,
RepVGG) on a real dataset, to quantize it afterwards with ``distilgan calibrate``."""

from __future__ import annotations

import argparse

from distilgan.utils import argtypes

DESCRIPTION = """\
Train a classifier of the zoo with SGD (momentum 0.9, nesterov), a cosine learning-rate schedule and
the standard crop (4-pixel padding) + flip augmentation; test accuracy after every epoch. OUT/model is
the classifier folder (config.json + model.safetensors) that calibrate takes; OUT/state/state.pt lets
--resume continue a stopped run exactly. Models: %s.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from distilgan.models.classifiers import classifier_names

    parser = subparsers.add_parser(
        "train-classifier",
        help="train a CIFAR-style classifier of the zoo (for INT8 calibration studies)",
        description=DESCRIPTION % ", ".join(classifier_names()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="zoo name, e.g. resnet20, vgg11_bn, mobilenetv2, shufflenetv2, repvgg_a0")
    parser.add_argument("--data", required=True, help="dataset with train and test splits (cifar10, a class-folder tree or .zip)")
    parser.add_argument("--out", required=True, help="run folder: OUT/model (checkpoint), OUT/state, OUT/history.json")
    parser.add_argument("--epochs", type=argtypes.positive_int, default=200, help="epochs (default: 200)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=128, help="batch size (default: 128)")
    parser.add_argument("--lr", type=argtypes.positive_float, default=0.1, help="peak learning rate of the cosine schedule (default: 0.1)")
    parser.add_argument("--weight-decay", type=argtypes.nonneg_float, default=5e-4, help="weight decay on conv/linear weights (default: 5e-4)")
    parser.add_argument("--label-smoothing", type=argtypes.decay, default=0.0, help="label smoothing (default: 0, off)")
    parser.add_argument("--train-size", type=argtypes.nonneg_int, default=0, help="train on a class-balanced subset of this many images (0 = all)")
    parser.add_argument("--eval-size", type=argtypes.nonneg_int, default=0, help="test on a seeded subset of this many images (0 = all)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of initialisation, order and augmentation (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT from its last finished epoch")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.calibration.sources import balanced_subset
    from distilgan.calibration.train import train_classifier
    from distilgan.data.datasets import open_dataset
    from distilgan.models.classifiers import build_classifier
    from distilgan.models.pretrained import read_config
    from distilgan.utils.paths import check_output_dir

    check_output_dir(args.out, "--out")  # before the dataset is decoded; an existing run resumes
    torch.manual_seed(args.seed)  # the initial weights
    train = open_dataset(args.data, split="train")
    test = open_dataset(args.data, split="test")
    if args.train_size:
        train = train.subset(balanced_subset(train.labels, min(args.train_size, len(train)), train.num_classes, args.seed))
    if args.eval_size:
        test = test.take(min(args.eval_size, len(test)), seed=0)
    classifier = build_classifier(args.model, num_classes=train.num_classes, resolution=train.resolution,
                                  class_names=train.class_names)
    if args.resume:
        from pathlib import Path

        saved = Path(args.out) / "model"
        if (saved / "config.json").exists() and read_config(saved).get("architecture") != classifier.config["architecture"]:
            from distilgan.errors import UserError

            raise UserError(f"{args.out} holds a {read_config(saved)['architecture']}, not {args.model} (use another --out)")
    print(f"{args.model}: {classifier.num_parameters():,} parameters; train {len(train)} / test {len(test)} images of {args.data}")
    result = train_classifier(
        classifier, train, test, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, device=args.device,
        seed=args.seed, resume=args.resume,
    )
    print(f"test accuracy {result['test_accuracy']:.2f}% after {result['epochs']} epochs; classifier in {result['model']}")
    return 0
