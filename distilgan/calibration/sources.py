"""Calibration images for post-training quantization, from real or synthetic sources.

Every source yields uint8 NHWC images that go through the classifier's own preprocessing
(``uint8 -> [-1, 1] -> normalise``), exactly like the test images, except ``noise``:

- ``real``     a class-balanced random subset of the training split of ``--data``;
- ``student``  images of a distilgan student checkpoint, z from its own trained distribution, labels
               class-balanced over the classes it was trained on;
- ``teacher``  images of a teacher spec (``distilgan.teachers.load_teacher``), class-balanced labels;
- ``noise``    i.i.d. N(0, 1) drawn directly in the classifier's NORMALISED input space (float,
               unclipped): what ``torch.randn(1, 3, 32, 32)`` fed to ``nncf.Dataset`` gives, the usual
               meaning of "Gaussian noise" calibration. In pixel terms it is N(mean_c, std_c) per
               channel, i.e. about N(0.45, 0.23) in [0, 1], but ~3% of its values lie outside the
               range any real image can reach, which widens the input quantization range;
- ``noise-pixel`` the same Gaussian expressed as pixels, rounded and clipped to uint8 (then the
               standard preprocessing): the "pixel-space N(0.5, ~0.25)" reading, kept for comparison;
- ``uniform``  uniform random pixels, integers in [0, 255];
- a FOLDER (or .zip/.npz) of images, ``size`` of them drawn with the seed (all when fewer).

Synthetic sources can be filtered by the classifier's own confidence in the intended class: draw
``size / keep`` images, keep the top ``keep`` fraction of each class (``filter_by_confidence``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.noise import balanced_labels, rng

BUILTIN_SOURCES = ("real", "student", "teacher", "noise", "noise-pixel", "uniform")
# rng stream ids, so a seed gives unrelated numbers for each source
_STREAMS = {"real": 1, "student": 2, "teacher": 3, "noise": 4, "noise-pixel": 5, "uniform": 6, "folder": 7}


@dataclass
class CalibrationSet:
    """Normalised float32 NCHW inputs ready for the quantizer, plus what they are."""

    inputs: np.ndarray
    source: str
    description: dict[str, Any] = field(default_factory=dict)
    images: np.ndarray | None = None  # uint8 NHWC when the source has pixels (for grids)

    def __len__(self) -> int:
        return len(self.inputs)


def balanced_subset(labels: np.ndarray, size: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of ``size`` rows, as equal per class as possible, chosen at random with ``seed``."""
    gen = rng(seed, _STREAMS["real"])
    per_class = np.bincount(balanced_labels(0, size, range(num_classes)), minlength=num_classes)
    chosen = []
    for label in range(num_classes):
        rows = np.flatnonzero(labels == label)
        if len(rows) < per_class[label]:
            raise UserError(f"class {label} has {len(rows)} training images, {per_class[label]} needed (lower --size)")
        chosen.append(gen.choice(rows, size=per_class[label], replace=False))
    return np.sort(np.concatenate(chosen))


def _student(checkpoint: str) -> Any:
    from distilgan.pipeline import StudentGenerator

    return StudentGenerator.from_pretrained(checkpoint)


def _teacher_images(spec: str, labels: np.ndarray, seed: int) -> np.ndarray:
    from distilgan.teachers import load_teacher
    from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
    from distilgan.utils.noise import sample_z

    teacher = load_teacher(spec)
    z = sample_z(rng(seed, _STREAMS["teacher"]), len(labels), teacher.z_dim)
    chunks = [teacher.generate(z[i : i + 250], labels[i : i + 250]) for i in range(0, len(labels), 250)]
    return nchw_to_nhwc(float_to_uint8(np.concatenate(chunks)))


def filter_by_confidence(classifier: Any, images: np.ndarray, labels: np.ndarray, keep: float) -> np.ndarray:
    """Indices of the ``keep`` fraction of each class with the highest softmax probability of
    their intended label under ``classifier`` (FP32 torch)."""
    import torch

    if not 0 < keep <= 1:
        raise UserError(f"confidence filter keep fraction must be in (0, 1], got {keep}")
    probs = []
    with torch.no_grad():
        for start in range(0, len(images), 500):
            x = torch.from_numpy(classifier.preprocess(images[start : start + 500]))
            probs.append(torch.softmax(classifier.eval()(x), 1).numpy())
    score = np.concatenate(probs)[np.arange(len(labels)), labels]
    kept = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        count = max(1, int(round(len(rows) * keep)))
        kept.append(rows[np.argsort(-score[rows], kind="stable")[:count]])
    return np.sort(np.concatenate(kept))


def calibration_set(
    source: str,
    classifier: Any,
    size: int = 300,
    seed: int = 0,
    data: Any = None,
    student: str | None = None,
    teacher: str | None = None,
    keep: float = 1.0,
) -> CalibrationSet:
    """``size`` calibration inputs for ``classifier`` from ``source`` (a name above or a path).

    ``data`` is the training split as an ``ImageDataset`` (or a dataset spec) for ``real``;
    ``keep`` < 1 filters synthetic (student/teacher) images by the classifier's confidence.
    """
    if size < 1:
        raise UserError(f"calibration size must be >= 1, got {size}")
    num_classes, res = classifier.num_classes, classifier.resolution
    description: dict[str, Any] = {"source": source, "size": int(size), "seed": int(seed)}
    if source == "noise":
        inputs = rng(seed, _STREAMS["noise"]).standard_normal((size, 3, res, res), dtype=np.float32)
        description["definition"] = "N(0,1) i.i.d. in the normalised input space, float, unclipped"
        return CalibrationSet(inputs, source, description)
    if source == "noise-pixel":
        mean = np.asarray(classifier.mean, np.float32) * 255
        std = np.asarray(classifier.std, np.float32) * 255
        pixels = rng(seed, _STREAMS["noise-pixel"]).standard_normal((size, res, res, 3), dtype=np.float32) * std + mean
        images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        description["definition"] = "pixels N(255*mean_c, 255*std_c), rounded and clipped to uint8"
        return CalibrationSet(classifier.preprocess(images), source, description, images)
    if source == "uniform":
        images = rng(seed, _STREAMS["uniform"]).integers(0, 256, (size, res, res, 3), dtype=np.uint8)
        description["definition"] = "uniform random integer pixels in [0, 255]"
        return CalibrationSet(classifier.preprocess(images), source, description, images)
    if source == "real":
        from distilgan.data.datasets import ImageDataset, open_dataset

        if data is None:
            raise UserError("calibration source 'real' needs a dataset (pass --data, e.g. cifar10 or a folder/zip)")
        train = data if isinstance(data, ImageDataset) else open_dataset(data, split="train")
        if train.num_classes != num_classes:
            raise UserError(f"{train.source} has {train.num_classes} classes, the classifier {num_classes} (use matching data)")
        rows = balanced_subset(train.labels, size, num_classes, seed)
        description.update(dataset=train.source, split=train.split, dataset_fingerprint=train.fingerprint())
        images = train.images[rows]
        return CalibrationSet(classifier.preprocess(images), source, description, images)
    if source in ("student", "teacher"):
        location = student if source == "student" else teacher
        if not location:
            raise UserError(f"calibration source '{source}' needs --{source} (a {'checkpoint folder' if source == 'student' else 'teacher spec'})")
        draw = int(np.ceil(size / keep)) if keep < 1 else size
        labels = balanced_labels(0, draw, range(num_classes))
        if source == "student":
            generator = _student(location)
            if generator.num_classes != num_classes:
                raise UserError(f"student {location} has {generator.num_classes} classes, the classifier {num_classes} "
                                "(use a student of the same class space)")
            # the student's own inputs: its trained classes (a subset when its set was) and z distribution
            labels = balanced_labels(0, draw, generator.classes)
            images = generator.generate(labels.tolist(), seed=seed, output="np")
            description.update(z_distribution=generator.z_distribution.to_dict(), classes=generator.classes)
        else:
            images = _teacher_images(location, labels, seed)
        description[source] = str(location)
        if keep < 1:
            rows = filter_by_confidence(classifier, images, labels, keep)[:size]
            images, labels = images[rows], labels[rows]
            description["confidence_filter"] = {"keep": keep, "drawn": draw}
        description["labels"] = "class-balanced"
        return CalibrationSet(classifier.preprocess(images), source, description, images)
    return _folder_set(Path(source), classifier, size, seed, description)


def _folder_set(path: Path, classifier: Any, size: int, seed: int, description: dict) -> CalibrationSet:
    from distilgan.data.datasets import open_dataset

    if not path.exists():
        raise UserError(
            f"unknown calibration source '{path}' (use {', '.join(BUILTIN_SOURCES)} or an existing image folder)"
        )
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        raise UserError(f"calibration folder {path} is empty (put .png/.jpg images in it)")
    images_ds = open_dataset(path, split="train")
    if len(images_ds) == 0:
        raise UserError(f"calibration folder {path} has no images (put .png/.jpg images in it)")
    chosen = images_ds.take(min(size, len(images_ds)), seed=int(rng(seed, _STREAMS["folder"]).integers(1 << 31)))
    images = chosen.images
    if images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    description.update(source="folder", folder=str(path.resolve()), available=len(images_ds), size=len(images))
    return CalibrationSet(classifier.preprocess(images), "folder", description, images)


def source_available(source: str, student: str | None, teacher: str | None) -> str | None:
    """None when ``source`` can run, else the reason it is skipped (for the study)."""
    if source == "student" and not student:
        return "no student checkpoint given (--student)"
    if source == "teacher" and not teacher:
        return "no teacher spec given (--teacher)"
    if source not in BUILTIN_SOURCES and not os.path.exists(source):
        return f"{source} does not exist"
    return None
