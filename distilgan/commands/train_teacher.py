"""``distilgan train-teacher``: train a BigGAN-style class-conditional teacher on a real dataset.

    distilgan train-teacher --data cifar10-train-jpeg-packed.npz --out runs/teacher [options]
    distilgan train-teacher --data ... --out runs/teacher --resume          # continue after a crash
    torchrun --nproc_per_node 2 -m distilgan train-teacher --data ... --out ...   # DDP, same files

Same loop, run folder, resume and settings rules as ``distilgan distill`` (docs/training.md); the
objective is :class:`distilgan.train.losses.GANObjective` (hinge, DiffAugment, optional LeCam, several
D steps per G step). One step of the loop is one D step, so ``--max-steps``, ``--ema-start`` and
``--log-every`` count D steps. ``--arch distylegan`` trains the student's G and D with this objective
from scratch on the real data: the plain conditional GAN a distilled student must beat. See docs/teacher.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distilgan.errors import UserError
from distilgan.train.config import RunConfig


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train-teacher",
        help="train a BigGAN-style class-conditional teacher on a real dataset",
        description="Train a class-conditional BigGAN-style generator (residual G with conditional BN and a "
        "shared class embedding, projection D, spectral norm, hinge loss, G EMA, DiffAugment, optional "
        "LeCam) on real images, with the same loop, run folder and exact resume as distill. "
        "Run under torchrun for DDP. --arch distylegan trains the DiStyleGAN student's networks the same way, "
        "from scratch: the baseline a distilled student is compared with. See docs/teacher.md.",
    )
    from distilgan.train.config import add_config_options

    parser.add_argument("--config", help="YAML file of settings (keys as the options, e.g. d_steps: 4, flat or by "
                        "section as RUN/config.yaml writes them)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where its state stops")
    add_config_options(parser, "train-teacher")
    parser.set_defaults(func=run)


def _validate(config: RunConfig) -> None:
    from distilgan.train.augment import parse_policy

    parse_policy(config.objective.diffaugment)  # widths and counts are checked with every config
    model = config.model
    if model.arch == "biggan":
        given = [f"--{key.replace('_', '-')}" for key in ("ngf", "ndf", "project_dim") if getattr(model, key) is not None]
        if given:
            raise UserError(f"{', '.join(given)} set the widths of --arch distylegan; the biggan networks take --ch, "
                            "--d-ch and --shared-dim")


def build_networks(config: RunConfig, data: Any) -> tuple[Any, Any]:
    """G and D of ``config.model.arch`` for ``data``; the architecture's defaults are recorded in the config."""
    from distilgan.models import BigGANDiscriminator, BigGANGenerator, DiStyleGANDiscriminator, DiStyleGANGenerator
    from distilgan.models.pretrained import constructor_default

    model = config.model
    family = {"biggan": (BigGANGenerator, BigGANDiscriminator),
              "distylegan": (DiStyleGANGenerator, DiStyleGANDiscriminator)}[model.arch]
    if model.z_dim is None:  # record the architecture's own latent size in config.yaml
        model.z_dim = constructor_default(family[0], "z_dim")
    shape = {"num_classes": data.num_classes, "resolution": data.resolution, "channels": data.channels}
    try:
        if model.arch == "biggan":
            generator = BigGANGenerator(z_dim=model.z_dim, ch=model.ch, shared_dim=model.shared_dim,
                                        class_names=data.class_names, **shape)
            discriminator = BigGANDiscriminator(ch=model.d_ch, **shape)
        else:
            for key, cls in (("ngf", DiStyleGANGenerator), ("ndf", DiStyleGANDiscriminator),
                             ("project_dim", DiStyleGANGenerator)):
                if getattr(model, key) is None:
                    setattr(model, key, constructor_default(cls, key))
            generator = DiStyleGANGenerator(z_dim=model.z_dim, ngf=model.ngf, project_dim=model.project_dim,
                                            class_names=data.class_names, **shape)
            discriminator = DiStyleGANDiscriminator(ndf=model.ndf, project_dim=model.project_dim, **shape)
    except ValueError as err:  # e.g. an unsupported resolution
        raise UserError(f"cannot build the {model.arch} networks for {config.data.data}: {err}") from None
    return generator, discriminator


def _resolve(args: argparse.Namespace) -> tuple[RunConfig, Path, dict[str, Any] | None]:
    from distilgan.train.distributed import resolve_device
    from distilgan.train.run_options import resolve_command_run

    config, run_dir, state = resolve_command_run(args, "train-teacher")
    if not config.data.data:
        raise UserError("no dataset given (add --data DATASET, e.g. cifar10 or a packed .npz)")
    _validate(config)
    resolve_device(config.loop.device)  # a bad --device fails before the dataset is decoded
    return config, run_dir, state


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.data.datasets import open_dataset
    from distilgan.train.config import save_config
    from distilgan.train.losses import GANObjective
    from distilgan.train.batches import RealBatches
    from distilgan.train.distributed import setup_distributed, teardown_distributed
    from distilgan.train.training_loop import Trainer

    config, run_dir, state = _resolve(args)
    data = open_dataset(config.data.data, "train")
    resolution, channels = data.resolution, data.channels

    dist = setup_distributed(config.loop.device)
    try:
        cuda = dist.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(config.loop.seed)  # same initial weights on every rank (rank 0's are broadcast anyway)
        model, gan = config.model, config.objective
        generator, discriminator = build_networks(config, data)
        objective = GANObjective(
            generator.to(dist.device), discriminator.to(dist.device), z_dim=model.z_dim,
            num_classes=data.num_classes, d_steps=gan.d_steps, policy=gan.diffaugment, lecam=gan.lecam,
            compile=gan.compile and cuda, seed=config.loop.seed, rank=dist.rank,
        )
        source = RealBatches(data.images, data.labels, config.loop.batch_size, config.loop.seed, dist,
                             mirror=config.data.mirror)
        from distilgan.train.run_options import build_loop_metrics

        from distilgan.utils.noise import sample_z

        def z_sampler(generator, n):  # the teacher's own z: N(0, I), as the objective draws it
            return sample_z(generator, n, model.z_dim)

        metrics = build_loop_metrics(config.loop, run_dir, config.data.data, z_sampler, list(range(data.num_classes)),
                                     dist.device)
        trainer = Trainer(config, generator, discriminator, objective, source, run_dir, dist, name="train-teacher",
                          metrics=metrics)
        if state is not None:
            trainer.load_state_dict(state)
        if dist.is_main:
            save_config(config, run_dir / "config.yaml")
            if config.objective.compile and not cuda:
                print("train-teacher: --compile is for CUDA; training without it on the CPU")
            print(f"train-teacher: precision {trainer.precision} ({trainer.precision_reason})"
                  f"{', channels_last ' + '+'.join(trainer.channels_last) if trainer.channels_last else ''}")
            g_params = sum(p.numel() for p in generator.parameters())
            d_params = sum(p.numel() for p in discriminator.parameters())
            print(f"train-teacher: {len(data)} images {resolution}x{resolution}, {data.num_classes} classes; "
                  f"G {g_params:,} / D {d_params:,} parameters; {source.steps_per_epoch} D steps/epoch, "
                  f"{trainer.total_steps} D steps ({gan.d_steps} per G step), {dist.world_size} process(es) "
                  f"on {dist.device}")
        from distilgan.train.run_options import train_to_the_end

        train_to_the_end(trainer, state is not None, run_dir, "train-teacher")
        return 0
    finally:
        teardown_distributed()
