"""Inception Score (Salimans et al. 2016) and the classifier score, its domain-specific cousin.

IS = exp(E_x KL(p(y|x) || p(y))), averaged over 10 splits, from the Inception network's softmax.
Only networks with logits give it: NVIDIA's inception-2015-12-05.pt does (1008 classes, output
bias dropped as in the original), the PyPI fid-helper network does not.

The *classifier score* is the same formula on the softmax of any classifier callable
(images -> logits), e.g. a CIFAR-10 classifier. It is labelled apart because its values are not
comparable with the Inception Score or across classifiers.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from distilgan.errors import UserError

SPLITS = 10


def score_from_probs(probs: np.ndarray, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) over splits of exp(mean KL(p(y|x) || p(y)))."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) < splits:
        raise UserError(f"need at least {splits} probability rows for {splits} splits, got shape {probs.shape}")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def classifier_probs(images: np.ndarray, classifier: Callable[[np.ndarray], Any], batch_size: int = 256) -> np.ndarray:
    """Softmax of ``classifier(float32 NCHW in [-1, 1]) -> logits`` over uint8 NHWC images."""
    from distilgan.utils.images import nhwc_to_nchw, uint8_to_float

    out = []
    for start in range(0, len(images), batch_size):
        batch = nhwc_to_nchw(uint8_to_float(images[start : start + batch_size]))
        logits = classifier(batch)
        logits = logits.detach().cpu().numpy() if hasattr(logits, "detach") else np.asarray(logits)
        out.append(softmax(np.asarray(logits, np.float64)))
    return np.concatenate(out)


def compute_is(gen: Any, ref: Any = None, **_: Any) -> dict[str, Any]:
    if gen.probs is None:
        return {"is": None, "is_note": "the feature network has no logits (the PyPI fid-helper network gives pool "
                "features only); give NVIDIA's inception-2015-12-05.pt to --network for the Inception Score"}
    mean, std = score_from_probs(gen.probs)
    return {"is": mean, "is_std": std, "is_splits": SPLITS}


def compute_cs(gen: Any, ref: Any = None, **_: Any) -> dict[str, Any]:
    if gen.class_probs is None:
        return {"cs": None, "cs_note": "no classifier softmax given (gen.class_probs is None)"}
    mean, std = score_from_probs(gen.class_probs)
    return {"cs": mean, "cs_std": std, "cs_splits": SPLITS, "cs_classifier": gen.classifier_name}


def refuse_unavailable(metrics: list[str], network: Any = None, network_given: bool = False) -> None:
    """Refuse 'is' before any work when it cannot be computed (a one-line UserError).

    Called once before the network loads (``network`` None: only the default network is known to
    lack logits) and once after (``network`` given: its kind decides)."""
    lacks_logits = (not network.has_logits) if network is not None else not network_given
    if "is" in metrics and lacks_logits:
        raise UserError("metric 'is' needs an Inception network with logits; the default fid-helper network has "
                        "pool features only: give NVIDIA's inception-2015-12-05.pt to --network, or drop 'is'")
