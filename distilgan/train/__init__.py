"""Training: one generic loop (training_loop.py), objectives (losses.py), EMA, state, config, logs."""

from distilgan.train.config import TrainConfig, resolve_config
from distilgan.train.losses import DistillationObjective

__all__ = ["DistillationObjective", "TrainConfig", "resolve_config"]
