"""``distilgan distill``: train a DiStyleGAN student from a distillation store (and optional real data).

    distilgan distill --data STORE --out RUN [--real DATASET] [--config FILE.yaml] [options]
    torchrun --nproc_per_node 2 -m distilgan distill ...      # DDP, same files

Settings resolve as: options given > --config file > the run being resumed > defaults; the result is
written to RUN/config.yaml. See docs/training.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distilgan.errors import UserError
from distilgan.utils import argtypes

def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="train a student generator from a distillation set",
        description="Train a DiStyleGAN student on a teacher's (z, label, image) store with TinyGAN-style "
        "black-box distillation; --real adds a GAN term on real images. Run under torchrun for DDP.",
    )
    from distilgan.train.config import add_config_options

    parser.add_argument("--config", help="YAML file of settings (keys as the options, e.g. lr_g: 2.0e-4, flat or "
                        "by section as RUN/config.yaml writes them)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where its state stops")
    add_config_options(parser, "distill")
    parser.add_argument("--no-verify-shards", dest="no_verify_shards", action="store_true",
                        help="skip the sha256 check of each shard against the manifest when first read "
                        "(for huge sets already checked with distilgan verify)")
    parser.set_defaults(func=run)


def _check_real_matches(store: Any, real: Any, spec: str) -> None:
    """Real data must share the store's image shape and class space; classes are matched by name."""
    for what in ("resolution", "channels"):
        have, want = getattr(real, what), getattr(store, what)
        if have != want:
            raise UserError(f"the real dataset {spec} has {what} {have} but the distillation set has {want} "
                            "(give --real data of the teacher's kind)")
    def named(names: Any) -> list[str]:  # "0", "1", ... are placeholders of unnamed labels, not names
        names = [str(n) for n in (names or [])]
        return [] if names == [str(i) for i in range(len(names))] else names

    store_names, real_names = named(store.class_names), named(getattr(real, "class_names", None))
    if store_names and real_names:
        if real_names != store_names:
            differ = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(store_names, real_names)) if a != b]
            detail = differ[0] if differ else f"{len(store_names)} vs {len(real_names)} names"
            raise UserError(f"the real dataset {spec} names its classes differently from the distillation set "
                            f"(label {detail}; give --real data with the teacher's classes, in its order)")
    elif real.num_classes != store.num_classes:
        raise UserError(f"the real dataset {spec} has {real.num_classes} classes but the distillation set has "
                        f"{store.num_classes} (give --real data of the teacher's kind)")


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.store import DistillationStore
    from distilgan.models import DiStyleGANDiscriminator, DiStyleGANGenerator
    from distilgan.models.pretrained import constructor_default
    from distilgan.train.config import save_config
    from distilgan.train.losses import DistillationObjective
    from distilgan.train.batches import RealSampler, StoreBatches
    from distilgan.train.distributed import setup_distributed, teardown_distributed
    from distilgan.train.training_loop import Trainer
    from distilgan.utils.noise import ZDistribution

    from distilgan.train.run_options import resolve_command_run

    config, run_dir, state = resolve_command_run(args, "distill")
    if not config.data.data:
        raise UserError("no distillation set given (add --data STORE)")
    argtypes.refuse_unless(args, "--pixel-decay", config.objective.pixel_schedule != "constant",
                           "applies to --pixel-schedule epoch-linear only (the constant schedule keeps lambda-pixel fixed)")

    from distilgan.store import set_shard_checks

    set_shard_checks(not getattr(args, "no_verify_shards", False))  # every store this run reads
    store = DistillationStore.open(config.data.data)
    real = None
    if config.data.real:
        from distilgan.data.datasets import open_dataset

        real = open_dataset(config.data.real, "train")
        _check_real_matches(store, real, config.data.real)
    for key, cls in (("ngf", DiStyleGANGenerator), ("ndf", DiStyleGANDiscriminator),
                     ("project_dim", DiStyleGANGenerator)):
        if getattr(config.model, key) is None:  # record the model's default in config.yaml
            setattr(config.model, key, constructor_default(cls, key))

    dist = setup_distributed(config.loop.device)
    try:
        if dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(config.loop.seed)  # same initial weights on every rank (rank 0's are broadcast anyway)
        z_distribution = ZDistribution.from_dict(store.manifest.get("z_distribution"))
        # what the student was trained on travels in its config.json (every consumer defaults to it)
        provenance = {"z_distribution": z_distribution.to_dict(), "classes": store.classes,
                      "teacher_fingerprint": (store.manifest.get("teacher") or {}).get("fingerprint")}
        model = config.model
        generator = DiStyleGANGenerator(
            z_dim=store.z_dim, num_classes=store.num_classes, project_dim=model.project_dim, ngf=model.ngf,
            resolution=store.resolution, channels=store.channels, class_names=store.class_names, **provenance,
        )
        discriminator = DiStyleGANDiscriminator(
            num_classes=store.num_classes, project_dim=model.project_dim, ndf=model.ndf,
            resolution=store.resolution, channels=store.channels,
        )
        objective = DistillationObjective(
            generator, discriminator, z_dim=store.z_dim, num_classes=store.num_classes,
            **vars(config.objective),  # the section's keys are the objective's arguments
            classes=store.classes, z_distribution=z_distribution, seed=config.loop.seed, rank=dist.rank,
        )
        sampler = None
        if real is not None:
            sampler = RealSampler(real.images, real.labels, config.loop.batch_size, config.loop.seed, dist)
        source = StoreBatches(config.data.data, config.loop.batch_size, config.loop.seed, dist,
                              workers=config.data.workers, real=sampler, in_memory=config.data.store_in_memory)
        objective.steps_per_epoch = source.steps_per_epoch  # lambda_pixel's epoch-linear schedule counts epochs

        def z_sampler(generator_: Any, n: int) -> Any:
            return z_distribution.sample(generator_, n, store.z_dim)

        from distilgan.train.run_options import build_loop_metrics

        metrics = build_loop_metrics(config.loop, run_dir, config.data.real or config.data.data, z_sampler,
                                     store.classes, dist.device)
        trainer = Trainer(config, generator, discriminator, objective, source, run_dir, dist, z_sampler=z_sampler,
                          metrics=metrics, classes=store.classes)
        if state is not None:
            trainer.load_state_dict(state)
        if dist.is_main:
            save_config(config, run_dir / "config.yaml")
            print(f"distill: precision {trainer.precision} ({trainer.precision_reason})"
                  f"{', channels_last ' + '+'.join(trainer.channels_last) if trainer.channels_last else ''}; z {z_distribution.describe()}, "
                  f"lambda-pixel {config.objective.pixel_schedule}")
            mode = "with real data" if real is not None else "black-box only (no --real)"
            print(f"distill: {store.num_samples} samples, {source.steps_per_epoch} steps/epoch, "
                  f"{trainer.total_steps} steps, {dist.world_size} process(es) on {dist.device}, {mode}")
        from distilgan.train.run_options import train_to_the_end

        train_to_the_end(trainer, state is not None, run_dir, "distill")
        return 0
    finally:
        teardown_distributed()
