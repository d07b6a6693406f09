"""Classifier zoo for CIFAR-sized images: a registry by name, and loading from a folder or file.

Names: ``resnet20/32/44/56`` (CIFAR ResNet, option-A shortcut), ``vgg11_bn``, ``vgg16_bn``,
``mobilenetv2``, ``shufflenetv2``, ``repvgg_a0`` (plus a few size variants). Every classifier takes
normalised float NCHW input and carries its normalisation (see :mod:`.base`); it is saved as a
folder (config.json + model.safetensors) with ``save_pretrained``.

Why here and not in ``calibration/``: the classifiers are shipped and judged by more than calibration
(the ``ca`` metric, in ``eval`` and in the training loop, loads them too, ``distilgan train-classifier``
makes them), and they are saved and loaded through the one ``models.ARCHITECTURES`` registry like every
other network; ``calibration/`` holds only what calibration does with them (sources, PTQ).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distilgan.errors import UserError
from distilgan.models.classifiers.base import CIFAR10_CLASSES, DEFAULT_MEAN, DEFAULT_STD, Classifier
from distilgan.models.classifiers.mobile import MobileNetV2, ShuffleNetV2
from distilgan.models.classifiers.repvgg import RepVGG
from distilgan.models.classifiers.resnet import CifarResNet, load_cifar_resnet_file
from distilgan.models.classifiers.vgg import VGG

# the classifier architectures; distilgan.models.ARCHITECTURES (the one registry) lists them with the rest
CLASSIFIER_CLASSES: tuple[type[Classifier], ...] = (CifarResNet, VGG, MobileNetV2, ShuffleNetV2, RepVGG)

# zoo name -> (class, constructor arguments)
CLASSIFIERS: dict[str, tuple[type[Classifier], dict[str, Any]]] = {
    "resnet20": (CifarResNet, {"depth": 20}),
    "resnet32": (CifarResNet, {"depth": 32}),
    "resnet44": (CifarResNet, {"depth": 44}),
    "resnet56": (CifarResNet, {"depth": 56}),
    "vgg11_bn": (VGG, {"depth": 11}),
    "vgg16_bn": (VGG, {"depth": 16}),
    "vgg11_bn_x0_25": (VGG, {"depth": 11, "width": 0.25}),
    "mobilenetv2": (MobileNetV2, {"width": 1.0}),
    "mobilenetv2_x0_5": (MobileNetV2, {"width": 0.5}),
    "mobilenetv2_x0_25": (MobileNetV2, {"width": 0.25}),
    "shufflenetv2": (ShuffleNetV2, {"width": 1.0}),
    "shufflenetv2_x0_5": (ShuffleNetV2, {"width": 0.5}),
    "repvgg_a0": (RepVGG, {"variant": "A0"}),
    "repvgg_a0_x0_25": (RepVGG, {"variant": "A0", "width": 0.25}),
}


def classifier_names() -> list[str]:
    return list(CLASSIFIERS)


def build_classifier(name: str, **overrides: Any) -> Classifier:
    """A freshly initialised zoo classifier; ``overrides`` e.g. num_classes, mean, std, class_names."""
    if name not in CLASSIFIERS:
        raise UserError(f"unknown classifier '{name}' (choose one of: {', '.join(CLASSIFIERS)})")
    cls, kwargs = CLASSIFIERS[name]
    return cls(**{**kwargs, **overrides})


def shipped_classifiers() -> list[str]:
    """Built-in names of the classifiers shipped in ``distilgan/pretrained`` (``cifar10-<zoo name>``)."""
    from distilgan.models.pretrained import builtin_names

    return [name for name in builtin_names() if name.removeprefix("cifar10-") in CLASSIFIERS]


def load_classifier(name_or_path: str | os.PathLike, device: Any = "cpu") -> Classifier:
    """A trained classifier from a checkpoint folder (config.json + model.safetensors), a
    ``train-classifier`` run folder (its ``model/``), a shipped name (``cifar10-vgg11_bn_x0_25``) or a
    CIFAR ResNet ``.th`` file. A bare zoo name
    is refused: it has no trained weights."""
    from distilgan.models.pretrained import builtin_names, parse_device, read_config, resolve_checkpoint

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix in (".th", ".pth", ".pt", ".tar"):
        return load_cifar_resnet_file(path).to(parse_device(device))
    if not path.exists() and str(name_or_path) in builtin_names():
        path = resolve_checkpoint(str(name_or_path))  # a shipped classifier, e.g. cifar10-vgg11_bn_x0_25
    if not path.exists() and str(name_or_path) in CLASSIFIERS:
        raise UserError(
            f"'{name_or_path}' names an untrained architecture (train it with `distilgan train-classifier --model "
            f"{name_or_path}` and pass the output folder, or pass a CIFAR ResNet .th file)"
        )
    if not path.exists():
        raise UserError(
            f"unknown classifier '{name_or_path}' (give a checkpoint folder, a CIFAR ResNet .th file, a shipped one: "
            f"{', '.join(shipped_classifiers()) or 'none'}, or train one of: {', '.join(CLASSIFIERS)})"
        )
    if path.is_dir() and not (path / "config.json").exists() and (path / "model" / "config.json").exists():
        path = path / "model"  # a train-classifier run folder
    folder = resolve_checkpoint(path)
    architecture = read_config(folder)["architecture"]
    from distilgan.models import ARCHITECTURES

    cls = ARCHITECTURES.get(architecture)
    if cls is None or not issubclass(cls, Classifier):
        known = ", ".join(c.__name__ for c in CLASSIFIER_CLASSES)
        raise UserError(f"{folder} holds a {architecture}, not a classifier (known: {known})")
    return cls.from_pretrained(folder, device=device)


__all__ = [
    "CIFAR10_CLASSES",
    "CLASSIFIERS",
    "CLASSIFIER_CLASSES",
    "Classifier",
    "CifarResNet",
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "MobileNetV2",
    "RepVGG",
    "ShuffleNetV2",
    "VGG",
    "build_classifier",
    "classifier_names",
    "load_cifar_resnet_file",
    "load_classifier",
    "shipped_classifiers",
]
