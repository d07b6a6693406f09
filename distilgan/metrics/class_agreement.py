"""Class agreement: how often a fixed CIFAR-10 classifier recognises the class each sample was asked for.

A conditional generator can score a fine FID while mixing up its classes (FID pools all classes);
agreement is the direct check. The judge is a named, published classifier so that figures are
comparable across runs: by default Idelbayev's CIFAR-10 ResNet-56 (He et al. 2016, option-A
shortcut; 6.61 % error on the official test set per its README), whose ``.th`` file is looked up in
``~/.cache/distilgan/classifiers`` (``DISTILGAN_CACHE`` moves it) and downloaded there once,
sha256-checked, when missing. Any classifier ``load_classifier`` reads (a ``.th`` file, a
``train-classifier`` folder, a shipped name) can judge instead; the result names it.

The same softmax also gives the classifier score (``cs``, see inception_score.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError

DEFAULT_JUDGE = "cifar10-resnet56"
_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models"
# name -> (file, sha256, url); the file names carry their sha256 prefix, torch.hub style.
KNOWN_JUDGES: dict[str, tuple[str, str, str]] = {
    "cifar10-resnet56": ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
                         f"{_AKAMASTER}/resnet56-4bfd9763.th"),
    "cifar10-resnet20": ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
                         f"{_AKAMASTER}/resnet20-12fca82f.th"),
}


def judges_dir() -> Path:
    return Path(os.environ.get("DISTILGAN_CACHE", Path.home() / ".cache" / "distilgan")).expanduser() / "classifiers"


def judge_file(name: str, download: bool = True) -> Path:
    """The verified weights file of a known judge, downloading it into the cache when absent."""
    from distilgan.utils.download import download_verified, file_digest

    file, sha256, url = KNOWN_JUDGES[name]
    path = judges_dir() / file
    if path.is_file():
        if file_digest(path) == sha256:
            return path
        raise UserError(f"{path} has the wrong sha256 (corrupt or replaced): delete it and it is downloaded again")
    if not download:
        raise UserError(f"{file} is not in {path.parent}: put it there (from {url}) or allow the download")
    return download_verified(url, path, sha256)


def load_judge(spec: str | os.PathLike = DEFAULT_JUDGE, device: Any = "cpu") -> tuple[Any, str]:
    """(classifier in eval mode, the name recorded in results)."""
    from distilgan.models.classifiers import load_classifier

    if str(spec) in KNOWN_JUDGES:
        path = judge_file(str(spec))
        return load_classifier(path, device=device), f"{spec} ({path.name})"
    model = load_classifier(spec, device=device)
    return model, str(spec)


def judge_probs(classifier: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The classifier's softmax (N, classes) over uint8 NHWC images, in float64."""
    import torch

    from distilgan.metrics.inception_score import classifier_probs

    if images.ndim != 4 or images.dtype != np.uint8:
        raise UserError(f"class agreement needs uint8 NHWC images, got {images.dtype} {images.shape}")
    expected = classifier.resolution
    if images.shape[1:3] != (expected, expected):
        raise UserError(f"images are {images.shape[1]}x{images.shape[2]}, the judging classifier takes {expected}x{expected}")
    device = next(classifier.parameters()).device

    def logits(batch: np.ndarray) -> Any:  # float NCHW in [-1, 1], as classifier_probs passes it
        with torch.inference_mode():
            return classifier(classifier.normalize(torch.from_numpy(batch).to(device)))

    return classifier_probs(images, logits, batch_size=batch_size)


def class_agreement(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fraction of samples whose arg-max class is the requested one, overall and per class."""
    labels = np.asarray(labels)
    predicted = probs.argmax(1)
    hits = predicted == labels
    per_class = {str(int(c)): float(hits[labels == c].mean()) for c in np.unique(labels)}
    return {"class_agreement": float(hits.mean()), "class_agreement_per_class": per_class}


def compute(gen: Any, ref: Any = None, **_: Any) -> dict[str, Any]:
    """Registry entry ``ca``: needs the requested labels and the judge's softmax (eval fills both)."""
    if gen.labels is None:
        raise UserError("class agreement needs the class each image was asked for (labelled samples, not bare --images)")
    if gen.class_probs is None:
        raise UserError("class agreement needs a judging classifier's softmax (eval --classifier)")
    return {**class_agreement(gen.class_probs, gen.labels), "ca_classifier": gen.classifier_name}
