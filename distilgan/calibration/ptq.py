"""INT8 post-training quantization of a classifier with OpenVINO + NNCF, and its measurements.

Protocol (recorded by :func:`protocol`): the torch classifier (RepVGG re-parameterised first) is
converted with ``openvino.convert_model`` to a graph with a dynamic batch and a fixed
3xHxW input that takes NORMALISED images; ``nncf.quantize`` (default preset, fast bias correction)
sees every calibration image once, one image per item (``subset_size`` = the set's size, not NNCF's
default 300); activation ranges from NNCF's default estimator or a chosen one (``ACTIVATION_RANGES``). Both models are compiled for the CPU with ``INFERENCE_PRECISION_HINT=f32`` so "FP32"
really is FP32 on CPUs that would otherwise pick bf16. Accuracy is top-1 on the given images;
throughput is images/s at batch 64, FP32 and INT8 timed in alternating rounds (best round kept) so
load from other processes on a shared machine hits both alike.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.extras import need

COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}

# How NNCF turns per-image activation statistics into a quantization range (per-tensor activations).
# "mean-minmax" is NNCF's default: the MEAN over calibration images of each image's min and max.
# "minmax" takes the smallest min and largest max over all images. Measured on the CIFAR ResNet-20
# (300 images): blurry synthetic images have smaller per-image maxima than real ones, so their mean
# under-estimates the range real images need and clips them (INT8 drop 1.3 points); the max over
# images does not (0.1-0.3 points). See docs/calibration.md.
ACTIVATION_RANGES = {"mean-minmax": "MEAN_MINMAX", "minmax": "MINMAX", "median-minmax": "MEDIAN_MINMAX"}  # -> NNCF's set


def _advanced_parameters(activation_ranges: str) -> Any:
    need("nncf")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if activation_ranges not in ACTIVATION_RANGES:
        raise UserError(f"unknown activation range estimator '{activation_ranges}' (choose one of: {', '.join(ACTIVATION_RANGES)})")
    estimator = getattr(RangeEstimatorParametersSet, ACTIVATION_RANGES[activation_ranges])
    return AdvancedQuantizationParameters(activations_range_estimator_params=estimator)


def to_openvino(classifier: Any) -> Any:
    """``openvino.Model`` of the classifier's forward (normalised NCHW in, logits out), batch dynamic."""
    ov = need("openvino")
    import torch

    model = classifier.reparameterize() if hasattr(classifier, "reparameterize") else classifier
    model = model.to("cpu").eval()
    res = classifier.resolution
    with torch.no_grad():
        return ov.convert_model(model, example_input=torch.zeros(1, 3, res, res), input=[(-1, 3, res, res)])


def compile_model(model: Any, threads: int | None = None) -> Any:
    ov = need("openvino")

    config = dict(COMPILE_CONFIG)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(model, "CPU", config)


def _check_inputs(model: Any, inputs: np.ndarray) -> None:
    shape = model.input(0).get_partial_shape()
    expected = tuple(int(d.get_length()) for d in list(shape)[1:])
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != expected:
        raise UserError(
            f"inputs are {tuple(inputs.shape)}, the model takes (N, {', '.join(map(str, expected))}) "
            "(resize the images to the classifier's resolution)"
        )


def quantize(model: Any, inputs: np.ndarray, fast_bias_correction: bool = True, activation_ranges: str = "mean-minmax") -> Any:
    """INT8 ``openvino.Model`` calibrated on ``inputs`` (normalised float32 NCHW)."""
    nncf = need("nncf")

    _check_inputs(model, inputs)
    if len(inputs) == 0:
        raise UserError("the calibration set is empty (give at least one image)")
    items = [inputs[i : i + 1] for i in range(len(inputs))]
    return nncf.quantize(
        model, nncf.Dataset(items), subset_size=len(items), fast_bias_correction=fast_bias_correction,
        advanced_parameters=_advanced_parameters(activation_ranges),
    )


def quantize_with_accuracy_control(
    model: Any, inputs: np.ndarray, val_inputs: np.ndarray, val_labels: np.ndarray, max_drop_points: float,
    activation_ranges: str = "mean-minmax",
) -> Any:
    """INT8 model whose accuracy on the validation images drops by at most ``max_drop_points``
    (percentage points); NNCF reverts the most harmful layers to FP32 until it holds."""
    nncf = need("nncf")

    _check_inputs(model, inputs)
    if not max_drop_points >= 0:
        raise UserError(f"--accuracy-control must be a drop in points >= 0, got {max_drop_points}")
    items = [inputs[i : i + 1] for i in range(len(inputs))]
    val_items = [(val_inputs[i : i + 100], val_labels[i : i + 100]) for i in range(0, len(val_inputs), 100)]

    def validate(compiled: Any, data: Any) -> float:
        correct = total = 0
        for x, y in data:
            logits = compiled(x)[0]
            correct += int((np.argmax(logits, 1) == y).sum())
            total += len(y)
        return correct / max(total, 1)

    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(items),
        nncf.Dataset(val_items),
        validation_fn=validate,
        max_drop=max_drop_points / 100.0,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(items),
        advanced_quantization_parameters=_advanced_parameters(activation_ranges),
    )


def predict(compiled: Any, inputs: np.ndarray, batch_size: int = 250, progress: str | None = None) -> np.ndarray:
    """Predicted classes of normalised NCHW ``inputs`` with a compiled OpenVINO model."""
    from distilgan.utils.progress import progress_bar

    out = []
    starts = range(0, len(inputs), batch_size)
    for start in progress_bar(starts, desc=progress or "eval", unit="batch", disable=progress is None, leave=False):
        out.append(np.argmax(compiled(inputs[start : start + batch_size])[0], 1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def accuracy(compiled: Any, inputs: np.ndarray, labels: np.ndarray, progress: str | None = None) -> float:
    """Top-1 accuracy in percent."""
    return float((predict(compiled, inputs, progress=progress) == labels).mean() * 100.0)


def throughput(models: dict[str, Any], resolution: int, batch: int = 64, seconds: float = 1.0, rounds: int = 3) -> dict[str, float]:
    """Images/s at ``batch`` for each compiled model, best of ``rounds`` alternating timings."""
    x = np.random.default_rng(0).standard_normal((batch, 3, resolution, resolution), dtype=np.float32)
    best = {name: 0.0 for name in models}
    for compiled in models.values():  # warm-up: first inferences allocate and pick kernels
        compiled(x)
    for _ in range(rounds):
        for name, compiled in models.items():
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                compiled(x)
                count += batch
            best[name] = max(best[name], count / elapsed)
    return best


def save_ir(model: Any, path: str | os.PathLike) -> Path:
    """Save an OpenVINO IR (``.xml`` + ``.bin``), weights as they are (no fp16 compression)."""
    ov = need("openvino")

    path = Path(path)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def protocol(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions and settings every calibration result carries."""
    nncf = need("nncf")
    ov = need("openvino")
    import torch

    return {
        "openvino": ov.get_version(),
        "nncf": nncf.__version__,
        "torch": torch.__version__,
        "compile_config": COMPILE_CONFIG,
        "quantizer": "nncf.quantize (default preset, fast bias correction, one image per item, subset_size = calibration size)",
        "accuracy": "top-1 percent on the evaluation images, OpenVINO CPU",
        "throughput": "images/s at batch 64, OpenVINO CPU, best of alternating rounds",
        **(extra or {}),
    }


def quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` with NNCF's INFO logging and progress bars turned down (for loops over runs)."""
    import logging

    nncf = need("nncf")

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        nncf.set_log_level(logging.WARNING)
    except AttributeError:
        pass
    try:
        return fn(*args, **kwargs)
    finally:
        logger.setLevel(level)
