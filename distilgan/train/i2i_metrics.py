"""In-loop metrics of an image-to-image student, on the run's held-out pairs (train/i2i_data.py).

* ``l1``: mean |student - teacher| over the held-out pairs, in [-1, 1] pixel units (lower is better);
* ``psnr``: PSNR of the student's uint8 output against the teacher's edited image, in dB (higher);
* ``flip``: how often a fixed classifier (the ``ca`` judge, ResNet-56 by default) recognises the edit's
  target class in the student's output (higher): the edit's own purpose, judged by a network other
  than the pair set's filter.

Held-out pairs are teacher pairs, not real photographs: these figures choose a snapshot and watch a
run; the edit's reported figures (flip rate and FID on real test images) come from the evaluation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distilgan.errors import UserError
from distilgan.train.i2i_data import PairSplit, to_float
from distilgan.train.loop_metrics import MetricsLog
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 image arrays (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


class I2IMetrics(MetricsLog):
    """Evaluates a translator on up to ``n`` held-out pairs; the first metric named picks RUN/best/."""

    higher_is_better = frozenset({"psnr", "flip"})

    def __init__(self, names: list[str], n: int, run_dir: str | Path, split: PairSplit, device: torch.device,
                 judge: str | None = None, batch_size: int = 100) -> None:
        count = min(int(n), len(split.val_sources))
        if count < 1:
            raise UserError("in-loop metrics need held-out pairs, and there are none (--holdout is 0, or the set's "
                            "filter kept none of them): raise --holdout or leave out --metrics")
        super().__init__(names, count, run_dir)
        self.sources, self.targets = split.val_sources[:count], split.val_targets[:count]
        self.edits, self.target_labels = split.val_edits[:count], split.val_target_labels[:count]
        self.device, self.batch_size = device, batch_size
        self._judge_spec, self._judge = judge, None
        if "flip" in names:
            self.judge()  # a judge that does not fit fails now, not after the first stretch of training

    def judge(self) -> tuple[Any, str]:
        if self._judge is None:
            from distilgan.metrics.class_agreement import DEFAULT_JUDGE, load_judge

            self._judge = load_judge(self._judge_spec or DEFAULT_JUDGE, device=self.device)
            model = self._judge[0]
            if int(getattr(model, "resolution", self.sources.shape[1])) != self.sources.shape[1]:
                raise UserError(f"the flip judge {self._judge[1]} takes {model.resolution}x{model.resolution} images, "
                                f"the pairs are {self.sources.shape[1]}x{self.sources.shape[2]} (give a fitting "
                                "--metric-classifier or drop flip from --metrics)")
        return self._judge

    @torch.no_grad()
    def translate(self, model: nn.Module) -> tuple[np.ndarray, float]:
        """(the student's uint8 NHWC outputs, mean L1 to the teacher in [-1, 1] units)."""
        was_training = model.training
        model.eval()
        chunks, l1_sum = [], 0.0
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            outputs = model(to_float(self.sources[start:stop], self.device),
                            torch.from_numpy(self.edits[start:stop]).to(self.device)).float()
            targets = to_float(self.targets[start:stop], self.device)
            l1_sum += float((outputs - targets).abs().mean()) * (stop - start)
            chunks.append(nchw_to_nhwc(float_to_uint8(outputs.cpu().numpy())))
        model.train(was_training)
        return np.concatenate(chunks), l1_sum / self.n

    def evaluate(self, model: nn.Module, step: int, epoch: int, images_seen: int) -> dict[str, Any]:
        started = time.time()
        outputs, l1 = self.translate(model)
        record: dict[str, Any] = {"step": step, "epoch": epoch, "kimg": round(images_seen / 1000, 3)}
        if "l1" in self.names:
            record["l1"] = l1
        if "psnr" in self.names:
            record["psnr"] = psnr_uint8(outputs, self.targets)
        protocol: dict[str, Any] = {"n": self.n, "pairs": "held-out teacher pairs kept by the set's filter"}
        if "flip" in self.names:
            from distilgan.metrics.class_agreement import class_agreement, judge_probs

            judge, name = self.judge()
            record["flip"] = class_agreement(judge_probs(judge, outputs), self.target_labels)["class_agreement"]
            protocol["flip_classifier"] = name
        self._mark_best(record)
        record["protocol"] = protocol
        record["seconds"] = round(time.time() - started, 1)
        return record
