"""Distil a modified student (pruned, or under fake quantisation) back towards the FP32 student.

No dataset is needed: the FP32 student is the teacher, and its inputs are drawn from the model's
own z distribution with balanced labels (``distilgan.utils.noise``, stream ``FINETUNE_STREAM``).

Fine-tuning runs through the one training loop (``train/training_loop.Trainer``) with
``train/finetune_objective.FinetuneObjective``: pixel L1 between the two outputs, plus the feature L1
through the trained discriminator of the distill run that made the student (``--run RUN``), or,
without one, the optional feature L1 through a fixed random-init conv net (``RandomFeatures``), a
cheap stand-in that weighs local structure beyond single pixels. So it has the loop's logging,
state, exact resume, EMA and metrics.

Batch norm runs in eval mode throughout (running statistics frozen, affine parameters trained):
what is optimised is exactly the inference function that gets exported. After pruning, the
running statistics are re-estimated first (``recalibrate_batchnorm``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distilgan.utils.latent import model_classes, model_z_distribution
from distilgan.utils.noise import balanced_labels, rng
from distilgan.utils.progress import progress_bar

FINETUNE_STREAM = 7002
BN_STREAM = 7003


class RandomFeatures(nn.Module):
    """Three fixed random 3x3 conv + LeakyReLU layers; features of all three are compared."""

    def __init__(self, channels: int = 3, width: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers, c_in = [], channels
        for i in range(3):
            conv = nn.Conv2d(c_in, width, 3, stride=1 if i == 0 else 2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / np.sqrt(c_in * 9))
                conv.bias.zero_()
            layers.append(conv)
            c_in = width
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for conv in self.layers:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return features


def input_batch(model: nn.Module, batch_size: int, step: int, seed: int, stream: int = FINETUNE_STREAM) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the generator's own inputs: z from the distribution it was trained on, labels
    balanced over its classes (for a normal z and all classes: the numbers this has always drawn)."""
    z = model_z_distribution(model).sample(rng(seed, stream, step), batch_size, int(model.z_dim))
    offset = step * batch_size
    labels = balanced_labels(offset, offset + batch_size, model_classes(model))
    return torch.from_numpy(z), torch.from_numpy(labels)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: int = 20, batch_size: int = 256, seed: int = 0) -> None:
    """Re-estimate BN running statistics (cumulative average) on the generator's own inputs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.train()
    for step in range(batches):
        model(*input_batch(model, batch_size, step, seed, BN_STREAM))
    for m, momentum in saved:
        m.momentum = momentum
    model.eval()


def distil(
    student: nn.Module,
    teacher: nn.Module,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-4,
    seed: int = 0,
    feature_weight: float | None = None,
    progress: bool = True,
    desc: str = "distil",
    *,
    discriminator: nn.Module | None = None,
    run_dir: str | Path | None = None,
    ema: bool = False,
    metrics: str | Sequence[str] | None = None,
    resume: bool = False,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``student`` in place to match ``teacher``, through the one training loop.

    Loss (train/finetune_objective.py): pixel L1, plus ``feature_weight`` x feature L1 through
    ``discriminator`` (the distill run's D, TinyGAN block weights; weight 1 by default) or, without
    one, through ``RandomFeatures`` when ``feature_weight`` > 0. BN stays in eval mode. Adam
    (0.5, 0.99), LR decaying linearly to 0 over ``steps``, fp32 unless ``options`` say otherwise.

    With ``run_dir`` the loop writes its run folder (config.yaml, log.jsonl, tb/, grids/,
    checkpoints/, state/state.pt) and ``resume`` continues it exactly; without, the same steps run
    with no files. ``ema`` ships the EMA copy (its weights end in ``student``); ``metrics`` (names,
    needs ``run_dir`` and a ``metric_ref``) are evaluated in the loop. ``options``: more loop config
    keys, applied as given (e.g. precision, ema_buffers, log_every, ckpt_every_steps, metric_ref,
    lr_decay_start=None for a constant LR).
    """
    from distilgan.errors import UserError
    from distilgan.train.config import build, check_resume_compatible, save_config
    from distilgan.train.distributed import DistContext
    from distilgan.train.finetune_objective import (
        STEPS_PER_EPOCH, FinetuneObjective, NoiseBatches, model_classes, model_z_distribution)
    from distilgan.train.logging import read_log
    from distilgan.train.run_options import build_loop_metrics
    from distilgan.train.state import load_state
    from distilgan.train.training_loop import STATE_PATH, Trainer

    features = RandomFeatures(student.channels) if discriminator is None and (feature_weight or 0) > 0 else None
    objective = FinetuneObjective(student, teacher, discriminator, features, feature_weight)
    report: dict[str, Any] = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                              "feature_weight": objective.feature_weight, "features": objective.kind,
                              "loss": objective.describe(), "loss_first_10pct": None, "loss_last_10pct": None}
    run_path = Path(run_dir) if run_dir is not None else None
    if resume and run_path is None:
        raise UserError("--resume continues a fine-tuning run folder (add --finetune-out DIR)")
    if steps <= 0 and not resume:
        return report

    names = ",".join(metrics) if isinstance(metrics, (list, tuple)) else (metrics or "")
    values: dict[str, Any] = {
        "out": str(run_path or ""), "batch_size": batch_size, "max_steps": max(1, steps),
        "epochs": max(1, -(-steps // STEPS_PER_EPOCH)), "lr_g": lr, "beta1": 0.5, "beta2": 0.99,
        "lr_decay_start": 0, "ema": ema, "seed": seed, "workers": 0, "metrics": names,
        # fp32 unless asked: the targets are small differences to an fp32 model, of bf16's rounding size
        "precision": "fp32", "extra": {"finetune": objective.settings()},
    }
    values.update(options or {})
    config = build("finetune", values)  # validated like any run's config; `extra` says what is fine-tuned
    state = None
    if run_path is not None and (run_path / STATE_PATH).exists():
        if not resume:
            raise UserError(f"{run_path} already holds a fine-tuning run (add --resume to continue it, or pick "
                            "another --finetune-out)")
        state = load_state(run_path / STATE_PATH)
        saved = (state["config"].get("extra") or {}).get("finetune") or {}
        for key, now in config.extra["finetune"].items():
            if saved.get(key) != now:
                raise UserError(f"--resume: the fine-tuning run in {run_path} was started with {key} "
                                f"{saved.get(key)!r}, now {now!r} (give the same --checkpoint, --run, --feature-weight "
                                "and model options, or a new --finetune-out)")
        check_resume_compatible(state["config"], config)
    elif resume:
        raise UserError(f"--resume: no fine-tuning state at {run_path / STATE_PATH} (start without --resume)")

    device = next(student.parameters()).device
    dist = DistContext(device=device)
    source = NoiseBatches.for_model(teacher, batch_size, seed, dist=dist)
    z_distribution, z_dim, classes = model_z_distribution(teacher), int(teacher.z_dim), model_classes(teacher)

    def z_sampler(generator: np.random.Generator, n: int) -> np.ndarray:
        return z_distribution.sample(generator, n, z_dim)

    loop_metrics = None
    if config.loop.metrics:
        if run_path is None:
            raise UserError("in-loop metrics write into a fine-tuning run folder (add --finetune-out DIR)")
        if not config.loop.metric_ref:
            raise UserError("in-loop metrics need a reference (add --metric-ref STATS.npz|STORE|DATASET, or --run RUN "
                            "to use that run's data)")
        loop_metrics = build_loop_metrics(config.loop, run_path, config.loop.metric_ref, z_sampler, classes, device)
    trainer = Trainer(config, student, objective.D, objective, source, run_path, dist, name=desc,
                      z_sampler=z_sampler, metrics=loop_metrics, classes=classes)
    if state is not None:
        trainer.load_state_dict(state)
        report["resumed_from_step"] = trainer.step

    history: list[float] = []
    if run_path is None:  # the same steps, no files: a throw-away fine-tuning (tests, quick checks)
        pending = []
        for step in progress_bar(range(trainer.total_steps), desc=desc, unit="step", disable=not progress, leave=False):
            pending.append(trainer.train_step(source.batch(step))["g/total"].detach())
        history = [float(v) for v in pending]
    else:
        run_path.mkdir(parents=True, exist_ok=True)
        save_config(config, run_path / "config.yaml")
        if trainer.step < trainer.total_steps:
            result = trainer.fit(resumed=state is not None)
            if "best" in result:
                report["best"] = result["best"]
        history = [float(r["g/total"]) for r in read_log(run_path) if "g/total" in r]
    if trainer.ema is not None:  # the EMA copy is what ships (as RUN/generator holds)
        student.load_state_dict(trainer.shipped_model().state_dict())
    student.eval()
    if history:
        tenth = max(1, len(history) // 10)
        report["loss_first_10pct"] = float(np.mean(history[:tenth]))
        report["loss_last_10pct"] = float(np.mean(history[-tenth:]))
    report.update(steps=trainer.total_steps, precision=trainer.precision, ema=trainer.ema is not None,
                  run_dir=str(run_path) if run_path is not None else None)
    return report


@torch.no_grad()
def l1_to(model: nn.Module, reference: nn.Module, n: int = 512, seed: int = 1, batch_size: int = 256) -> float:
    """Mean |model - reference| over n held-out inputs (a stream no fine-tuning step uses)."""
    total, count = 0.0, 0
    for step in range(0, n, batch_size):
        # the reference's inputs: it is the model whose z and classes the fine-tuned one inherits
        z, labels = input_batch(reference, min(batch_size, n - step), step, seed, stream=7004)
        total += float((model(z, labels) - reference(z, labels)).abs().sum())
        count += z.shape[0] * model.channels * model.resolution**2
    return total / count
