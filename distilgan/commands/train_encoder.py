"""``distilgan train-encoder``: learn E(x, y) -> z, the fast inversion of a teacher, from its own samples.

    distilgan sample --teacher SPEC --out STORE --per-class 5000
    distilgan train-encoder --data STORE --out RUN [--ndf 64] [--max-steps N]
    distilgan invert --teacher SPEC --encoder RUN/generator --in IMAGES --label cat --out DIR [--steps K]

Regression of the set's z from its images (train/encoder_objective.py) by the one training loop:
no gradient of the teacher is needed, so any teacher `sample` reads can be inverted this way.
"""

from __future__ import annotations

import argparse
from typing import Any

from distilgan.errors import UserError

KIND = "train-encoder"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        KIND,
        help="train a latent encoder (fast GAN inversion) on a distillation set",
        description="Train E(x, y) -> z on a teacher's own (z, label, image) samples: the one-pass inversion "
        "`distilgan invert --encoder` uses alone or as its optimisation's starting point.",
    )
    from distilgan.train.config import add_config_options

    parser.add_argument("--config", help="YAML file of settings (keys as the options, flat or by section)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where its state stops")
    add_config_options(parser, KIND)
    parser.set_defaults(func=run)


def _grid_teacher(spec: str | None, store: Any) -> Any:
    """The teacher that draws the grid's reconstructions, or None (a grid of the inputs alone)."""
    from distilgan.teachers import load_teacher

    if spec is not None and spec.lower() == "none":
        return None
    recorded = store.manifest.get("teacher") or {}
    options = {}
    if not spec:  # the set's own teacher, run as the set was sampled (its range and truncation)
        spec = recorded.get("spec")
        options = {"output_range": tuple(recorded["output_range"]) if recorded.get("output_range") else None,
                   "truncation": recorded.get("truncation")}
    if not spec:
        return None
    try:
        return load_teacher(spec, **options)
    except UserError as err:
        print(f"{KIND}: the grid shows the inputs alone: the set's teacher {spec} does not load here ({err})")
        return None


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.models.encoder import LatentEncoder
    from distilgan.store import DistillationStore
    from distilgan.train.batches import StoreBatches
    from distilgan.train.config import save_config
    from distilgan.train.distributed import setup_distributed, teardown_distributed
    from distilgan.train.encoder_objective import EncoderInputs, EncoderObjective
    from distilgan.train.run_options import check_same_data, resolve_command_run, train_to_the_end
    from distilgan.train.training_loop import Trainer

    config, run_dir, state = resolve_command_run(args, KIND)
    if not config.data.data:
        raise UserError("no distillation set given (add --data STORE, made by distilgan sample)")
    store = DistillationStore.open(config.data.data)
    check_same_data(config, state, store.manifest)
    dist = setup_distributed(config.loop.device)
    try:
        torch.manual_seed(config.loop.seed)
        teacher = store.manifest.get("teacher") or {}
        encoder = LatentEncoder(z_dim=store.z_dim, num_classes=store.num_classes, resolution=store.resolution,
                                channels=store.channels, ndf=config.model.ndf, class_names=store.class_names,
                                teacher_fingerprint=teacher.get("fingerprint"),
                                z_distribution=store.manifest.get("z_distribution"))
        source = StoreBatches(config.data.data, config.loop.batch_size, config.loop.seed, dist, workers=0, in_memory=True)
        _, labels, images = source.arrays()
        inputs = EncoderInputs(images, labels, config.loop.seed,
                               _grid_teacher(config.data.teacher, store) if dist.is_main else None)
        objective = EncoderObjective(encoder)
        trainer = Trainer(config, encoder, objective.D, objective, source, run_dir, dist, name=KIND, inputs=inputs)
        if state is not None:
            trainer.load_state_dict(state)
        if dist.is_main:
            save_config(config, run_dir / "config.yaml")
            print(f"{KIND}: {store.num_samples} samples of {teacher.get('spec', 'the teacher')}, z_dim {store.z_dim}; "
                  f"{source.steps_per_epoch} steps/epoch, {trainer.total_steps} steps, precision {trainer.precision}")
        train_to_the_end(trainer, state is not None, run_dir, KIND)
        return 0
    finally:
        teardown_distributed()

