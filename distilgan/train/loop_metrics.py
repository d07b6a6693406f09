"""Metrics inside the training loop: which snapshot of a run is good (stylegan2-ada's metric_main idea).

At a cadence (``metric_every`` steps, or at every checkpoint) the loop's inference model (the EMA
copy when EMA is on) generates ``metric_n`` class-balanced samples from one fixed set of z (drawn
once per run from its seed and z distribution, so successive figures differ only by the weights),
their Inception features are compared with a reference computed once and cached in
``RUN/metrics/reference.npz`` (keyed by what it was made from) and, for ``ca``, a fixed classifier
judges whether each sample shows its requested class; one record per evaluation is
appended to ``RUN/metrics.jsonl``, with TensorBoard scalars ``metrics/<name>``. The first metric
named decides the best snapshot, kept as ``RUN/best/`` (config.json + model.safetensors).

These are in-loop figures at ``metric_n`` samples against a ``metric_n``-image reference: good for
choosing a snapshot and watching a run, not comparable with 10,000-sample figures (every record
says its protocol).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from distilgan.errors import UserError

IN_LOOP_METRICS = ("kid", "fid", "ca")
HIGHER_IS_BETTER = frozenset({"ca"})  # class agreement; the distances are lower-is-better
METRICS_LOG = "metrics.jsonl"
BEST_DIR = "best"
REFERENCE_FILE = Path("metrics") / "reference.npz"
METRIC_Z_STREAM = 0x3E7C  # the fixed z of every evaluation of a run
KID_SUBSETS = 100


def parse_metrics(text: str | None, allowed: tuple[str, ...] | None = None) -> list[str]:
    """``"kid,fid"`` (or space separated) -> ["kid", "fid"]; an unknown name is a one-line error.
    ``allowed``: the run kind's in-loop metrics (default: a generator's, IN_LOOP_METRICS)."""
    allowed = IN_LOOP_METRICS if allowed is None else allowed
    names = [n for n in str(text or "").replace(",", " ").split() if n]
    if names and not allowed:
        raise UserError("this kind of run has no in-loop metrics (leave out --metrics)")
    for name in names:
        if name not in allowed:
            raise UserError(f"metric '{name}' does not exist inside this loop (choose from {', '.join(allowed)}; "
                            "the others are for distilgan eval)")
    if len(set(names)) != len(names):
        raise UserError(f"--metrics names a metric twice: {' '.join(names)}")
    return names


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    from distilgan.train.logging import read_jsonl

    return read_jsonl(Path(run_dir) / METRICS_LOG)


@dataclass
class ReferenceImages:
    """What the in-loop metrics compare against: uint8 NHWC images and a description of them."""

    images: np.ndarray
    description: dict[str, Any]


@dataclass
class PrecomputedReference:
    """Features from a `distilgan stats` file (same network), used as they are."""

    features: np.ndarray
    description: dict[str, Any]


def reference_loader(spec: str, n: int, seed: int = 0) -> Callable[[], ReferenceImages | PrecomputedReference]:
    """A loader for ``--metric-ref``: a statistics .npz with features, a distillation store folder, or a
    dataset spec (cifar10, a folder, zip, .npz); ``n`` images or features, a seeded subset."""

    def load() -> ReferenceImages | PrecomputedReference:
        from distilgan.metrics.reference import is_reference_file, load_reference
        from distilgan.utils.noise import rng

        path = Path(spec)
        if path.is_file() and is_reference_file(path):
            ref = load_reference(path)
            features = ref.require_features("in-loop metrics")
            if len(features) > n:
                features = features[np.sort(rng(seed, 0x5E1).choice(len(features), n, replace=False))]
            return PrecomputedReference(features, {"kind": "statistics", "path": str(spec), "n": int(len(features))})
        if path.is_dir() and (path / "manifest.json").is_file():
            from distilgan.store import DistillationStore

            store = DistillationStore.open(path)
            images = store_images(store, n)
            return ReferenceImages(images, {"kind": "store", "path": str(spec), "n": int(len(images)),
                                            "teacher": store.manifest.get("teacher", {}).get("fingerprint")})
        from distilgan.data.datasets import open_dataset

        dataset = open_dataset(spec, "train")
        if n < len(dataset):
            dataset = dataset.take(n, seed=seed)
        return ReferenceImages(np.asarray(dataset.images), {"kind": "dataset", "spec": str(spec), "split": "train",
                                                            "n": int(len(dataset)), "subset_seed": seed})

    return load


def store_images(store: Any, n: int) -> np.ndarray:
    """The first ``n`` images of a store (interleaved labels: every prefix is class-balanced)."""
    chunks, have = [], 0
    for i in range(len(store.shard_counts())):
        if have >= n:
            break
        _, _, images = store.read_shard(i)
        chunks.append(images[: n - have])
        have += len(chunks[-1])
    return np.concatenate(chunks)


def load_network_fast(device: Any = None) -> Any:
    """The fastest Inception backend installed (OpenVINO bf16 when present): in-loop figures choose
    snapshots, they are not reported figures (the backend is recorded with every record). A CUDA run
    keeps the network on its GPU (torch fp32): the CPU would be the bottleneck there."""
    from distilgan.metrics.network import load_network

    if device is not None and torch.device(device).type == "cuda":
        return load_network(device=str(device), backend="torch")
    try:
        return load_network(backend="openvino", precision="bf16")
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - OpenVINO missing or failing: the exact torch path still works
        return load_network()


class MetricsLog:
    """What every in-loop metric set shares: ``RUN/metrics.jsonl``, the best record by the first metric
    named (read back on resume), and the one-line summary. Subclasses define ``evaluate``."""

    higher_is_better = HIGHER_IS_BETTER

    def __init__(self, names: list[str], n: int, run_dir: str | Path) -> None:
        if not names:
            raise ValueError("no metrics to compute")
        self.names, self.n, self.run_dir = names, int(n), Path(run_dir)
        self.primary = names[0]
        previous = [r for r in read_metrics(self.run_dir) if self.primary in r]
        self.best: dict[str, Any] | None = min(previous, key=self._rank) if previous else None

    def _rank(self, record: dict[str, Any]) -> float:
        """Sort key of a record: smaller is better for the primary metric."""
        value = float(record[self.primary])
        return -value if self.primary in self.higher_is_better else value

    def _mark_best(self, record: dict[str, Any]) -> None:
        record["best"] = self.best is None or self._rank(record) < self._rank(self.best)
        if record["best"]:
            self.best = record

    def write(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate(self, last_step: int) -> None:
        """On resume: drop records past the resumed step (a killed run may have evaluated beyond it)."""
        from distilgan.utils.atomic import atomic_write_text

        path = self.run_dir / METRICS_LOG
        if path.exists():
            kept = [r for r in read_metrics(self.run_dir) if int(r.get("step", 0)) <= last_step]
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
            scored = [r for r in kept if self.primary in r]
            self.best = min(scored, key=self._rank) if scored else None

    def summary(self) -> str | None:
        if self.best is None:
            return None
        return (f"best {self.primary} {self.best[self.primary]:.5g} at step {self.best['step']} "
                f"({self.n} samples, in-loop protocol) -> {self.run_dir / BEST_DIR}")


class LoopMetrics(MetricsLog):
    """Evaluates a generator at a cadence, logs the figures, and keeps the best snapshot."""

    def __init__(self, names: list[str], n: int, run_dir: str | Path, reference: Callable[[], ReferenceImages],
                 z_sampler: Callable[[np.random.Generator, int], np.ndarray], classes: list[int], seed: int,
                 device: torch.device, batch_size: int = 100, judge: str | None = None) -> None:
        super().__init__(names, n, run_dir)
        self.device, self.batch_size = device, batch_size
        from distilgan.utils.noise import balanced_labels, rng

        self.z = z_sampler(rng(seed, METRIC_Z_STREAM), self.n).astype(np.float32)
        self.labels = balanced_labels(0, self.n, classes)
        self._reference_loader = reference
        self._network: Any = None
        self._reference: dict[str, Any] | None = None
        self._judge_spec, self._judge = judge, None

    def judge(self) -> tuple[Any, str]:
        if self._judge is None:
            from distilgan.metrics.class_agreement import DEFAULT_JUDGE, load_judge

            self._judge = load_judge(self._judge_spec or DEFAULT_JUDGE, device=self.device)
        return self._judge

    # -- the reference, computed once per run ---------------------------------------------------
    def network(self) -> Any:
        if self._network is None:
            self._network = load_network_fast(self.device)
        return self._network

    def reference(self) -> dict[str, Any]:
        """Reference features (cached in the run folder, recomputed if what they came from changed)."""
        if self._reference is not None:
            return self._reference
        from distilgan.metrics.network import extract
        from distilgan.utils.atomic import atomic_path

        ref = self._reference_loader()
        if isinstance(ref, PrecomputedReference):  # a `distilgan stats` file: its own features
            self._reference = self._stats(ref.features, ref.description)
            return self._reference
        network = self.network()
        key = hashlib.sha256(json.dumps({"ref": ref.description, "n": len(ref.images), "network": network.sha256,
                                         "backend": network.describe()}, sort_keys=True, default=str)
                             .encode()).hexdigest()[:20]
        path = self.run_dir / REFERENCE_FILE
        if path.is_file():
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["key"]) == key:
                    features = cached["features"]
                    self._reference = self._stats(features, ref.description)
                    return self._reference
        features, _ = extract(network, ref.images, progress=False, desc="metric reference")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, features=features, key=np.asarray(key))
        self._reference = self._stats(features, ref.description)
        return self._reference

    @staticmethod
    def _stats(features: np.ndarray, description: dict[str, Any]) -> dict[str, Any]:
        from distilgan.metrics.fid import feature_stats

        mu, sigma = feature_stats(features)
        return {"features": features, "mu": mu, "sigma": sigma, "description": description}

    # -- one evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, model: nn.Module) -> np.ndarray:
        from distilgan.utils.images import float_to_uint8, nchw_to_nhwc

        was_training = model.training
        model.eval()
        chunks = []
        for start in range(0, self.n, self.batch_size):
            z = torch.from_numpy(self.z[start : start + self.batch_size]).to(self.device)
            labels = torch.from_numpy(self.labels[start : start + self.batch_size]).to(self.device)
            chunks.append(nchw_to_nhwc(float_to_uint8(model(z, labels).float().cpu().numpy())))
        model.train(was_training)
        return np.concatenate(chunks)

    def evaluate(self, model: nn.Module, step: int, epoch: int, images_seen: int) -> dict[str, Any]:
        """Compute the metrics of ``model``; returns the record (``best`` says if it is the new best)."""
        from distilgan.metrics.fid import fid_from_features
        from distilgan.metrics.kid import kernel_inception_distance
        from distilgan.metrics.network import extract

        started = time.time()
        uses_features = any(name in self.names for name in ("kid", "fid"))
        reference = self.reference() if uses_features else None
        images = self.generate(model)
        features = extract(self.network(), images, progress=False, desc="metrics")[0] if uses_features else None
        record: dict[str, Any] = {"step": step, "epoch": epoch, "kimg": round(images_seen / 1000, 3)}
        if "ca" in self.names:
            from distilgan.metrics.class_agreement import class_agreement, judge_probs

            judge, judge_name = self.judge()
            agreement = class_agreement(judge_probs(judge, images), self.labels)
            record.update(ca=agreement["class_agreement"], ca_per_class=agreement["class_agreement_per_class"])
        if "kid" in self.names:
            # subsets of half the samples: with subsets as large as the set every subset would be the
            # whole set and the spread over subsets would read 0
            subset = max(2, min(1000, len(features) // 2, len(reference["features"]) // 2))
            kid = kernel_inception_distance(features, reference["features"], num_subsets=KID_SUBSETS,
                                            subset_size=subset, seed=0)
            record.update(kid=kid["kid"], kid_std=kid["kid_std"], kid_subset_size=subset)
        if "fid" in self.names:
            record["fid"] = fid_from_features(features, reference["mu"], reference["sigma"])
        self._mark_best(record)
        record["protocol"] = {"n": self.n, "labels": "class-balanced", "z": "fixed per run (seed, stream 0x3E7C)",
                              "kid_subsets": KID_SUBSETS if "kid" in self.names else None}
        if uses_features:
            record["protocol"].update(reference=reference["description"], reference_n=int(len(reference["features"])),
                                      network=self.network().describe())
        if "ca" in self.names:
            record["protocol"]["ca_classifier"] = judge_name
        record["seconds"] = round(time.time() - started, 1)
        return record
