"""Training: one generic loop (training_loop.py), objectives (losses.py), EMA, state, config, logs."""

from distilgan.train.config import LoopConfig, RunConfig, resolve_run_config
from distilgan.train.losses import DistillationObjective

__all__ = ["DistillationObjective", "LoopConfig", "RunConfig", "resolve_run_config"]
