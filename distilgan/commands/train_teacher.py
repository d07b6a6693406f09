"""``distilgan train-teacher``: train a BigGAN-style class-conditional teacher on a real dataset.

    distilgan train-teacher --data cifar10-train-jpeg-packed.npz --out runs/teacher [options]
    distilgan train-teacher --data ... --out runs/teacher --resume          # continue after a crash
    torchrun --nproc_per_node 2 -m distilgan train-teacher --data ... --out ...   # DDP, same files

Same loop, run folder, resume and settings rules as ``distilgan distill`` (docs/training.md); the
objective is :class:`distilgan.train.losses.GANObjective` (hinge, DiffAugment, optional LeCam, several
D steps per G step). One step of the loop is one D step, so ``--max-steps``, ``--ema-start`` and
``--log-every`` count D steps. See docs/teacher.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from distilgan.errors import UserError
from distilgan.train.config import RESUME_FREE_KEYS, TrainConfig
from distilgan.train.run_options import add_shared_options, shared_cli_values
from distilgan.utils import argtypes


@dataclass
class TeacherConfig(TrainConfig):
    """TrainConfig with the teacher's own keys and BigGAN C10 defaults (Adam beta1 0, 4 D steps)."""

    batch_size: int = 64
    epochs: int = 500
    beta1: float = 0.0
    ema_start: int = 4000  # 1000 G steps at 4 D steps per G step, as BigGAN-PyTorch
    ckpt_every: int = 10
    ch: int = 256  # generator width
    d_ch: int = 256  # discriminator width
    z_dim: int = 128
    shared_dim: int = 128
    d_steps: int = 4
    diffaugment: str = "translation,cutout"
    lecam: float = 0.0
    mirror: bool = True  # random left-right flips of the real images
    compile: bool = False  # torch.compile G and D (CUDA only)


# compile changes speed, not the maths: it may differ on --resume like the device or amp
TEACHER_FREE_KEYS = RESUME_FREE_KEYS | {"compile"}

# (option, config key, type, help); every one defaults to None so "not given" is visible.
OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("--ch", "ch", argtypes.positive_int, "generator width, channels of every G block (default 256)"),
    ("--d-ch", "d_ch", argtypes.positive_int, "discriminator width (default 256)"),
    ("--z-dim", "z_dim", argtypes.positive_int, "latent size; a multiple of (number of G blocks + 1), e.g. 4 at 32x32 (default 128)"),
    ("--shared-dim", "shared_dim", argtypes.nonneg_int, "shared class embedding size, 0 for one-hot conditioning (default 128)"),
    ("--batch-size", "batch_size", argtypes.positive_int, "global batch of real images per D step, split over DDP processes (default 64)"),
    ("--d-steps", "d_steps", argtypes.positive_int, "D steps per G step (default 4)"),
    ("--epochs", "epochs", argtypes.positive_int, "passes over the dataset (default 500)"),
    ("--max-steps", "max_steps", argtypes.positive_int, "stop after this many D steps (default: no limit)"),
    ("--lr-g", "lr_g", argtypes.positive_float, "generator Adam learning rate (default 2e-4)"),
    ("--lr-d", "lr_d", argtypes.positive_float, "discriminator Adam learning rate (default 2e-4)"),
    ("--beta1", "beta1", argtypes.decay, "Adam beta1 (default 0.0)"),
    ("--beta2", "beta2", argtypes.decay, "Adam beta2 (default 0.999)"),
    ("--lr-decay-start", "lr_decay_start", argtypes.nonneg_int,
     "decay both LRs linearly to 0 from this D step to the last (default: constant LR)"),
    ("--diffaugment", "diffaugment", str,
     "DiffAugment policy on real and fake images, a comma list of color, translation, cutout; '' for none "
     "(default translation,cutout)"),
    ("--lecam", "lecam", argtypes.nonneg_float, "LeCam regularisation weight, 0 = off (default 0; 0.3 in StudioGAN)"),
    ("--ema-decay", "ema_decay", argtypes.decay, "decay of the EMA copy of G (default 0.999)"),
    ("--ema-start", "ema_start", argtypes.nonneg_int, "D step from which G is averaged; before it the copy follows G (default 4000)"),
    ("--ckpt-every", "ckpt_every", argtypes.positive_int, "save checkpoint + training state every this many epochs (default 10)"),
    ("--ckpt-every-steps", "ckpt_every_steps", argtypes.positive_int,
     "also save checkpoint + training state every this many D steps (default: only by epochs)"),
    ("--grid-every", "grid_every", argtypes.positive_int, "save the fixed sample grid every this many epochs (default 1)"),
    ("--log-every", "log_every", argtypes.positive_int, "log every loss term every this many D steps (default 10)"),
    ("--grid-columns", "grid_columns", argtypes.positive_int, "samples per class row in the grid (default 10)"),
    ("--seed", "seed", argtypes.seed, "seed of model init, data order and noise (default 0)"),
    ("--device", "device", str, "auto, cpu or cuda (default auto)"),
]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train-teacher",
        help="train a BigGAN-style class-conditional teacher on a real dataset",
        description="Train a class-conditional BigGAN-style generator (residual G with conditional BN and a "
        "shared class embedding, projection D, spectral norm, hinge loss, G EMA, DiffAugment, optional "
        "LeCam) on real images, with the same loop, run folder and exact resume as distill. "
        "Run under torchrun for DDP. See docs/teacher.md.",
    )
    parser.add_argument("--data", help="real dataset: cifar10, a class folder or zip, an .npz (also a packed JPEG .npz)")
    parser.add_argument("--out", help="run folder (config, logs, grids, checkpoints, training state)")
    parser.add_argument("--config", help="YAML file of settings (keys as the options, e.g. d_steps: 4)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where its state stops")
    for flag, key, kind, text in OPTIONS:
        parser.add_argument(flag, dest=key, type=kind, default=None, help=text)
    parser.add_argument("--mirror", dest="mirror", action=argparse.BooleanOptionalAction, default=None,
                        help="flip a random half of the real images left-right each epoch (default on)")
    parser.add_argument("--ema", dest="ema", action=argparse.BooleanOptionalAction, default=None,
                        help="keep an EMA copy of G and ship it (default on; --no-ema ships the raw G)")
    parser.add_argument("--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None,
                        help="legacy spelling of --precision bf16 on CUDA")
    add_shared_options(parser)
    argtypes.retype(parser, argtypes.SHARED_OPTION_TYPES)
    parser.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile G and D on CUDA (default off; ignored on CPU)")
    parser.set_defaults(func=run)


def _validate(config: TeacherConfig) -> None:
    from distilgan.train.augment import parse_policy

    for name in ("ch", "d_ch", "z_dim", "d_steps"):
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.shared_dim < 0 or config.lecam < 0:
        raise UserError("shared_dim and lecam must be >= 0")
    parse_policy(config.diffaugment)


def _resolve(args: argparse.Namespace) -> tuple[TeacherConfig, Path, dict[str, Any] | None]:
    from distilgan.train.config import check_resume_compatible, load_yaml, resolve_config
    from distilgan.train.state import load_state
    from distilgan.train.distributed import resolve_device
    from distilgan.train.training_loop import STATE_PATH

    cli = {key: getattr(args, key) for _, key, _, _ in OPTIONS}
    cli.update(data=args.data, out=args.out, ema=args.ema, amp=args.amp, mirror=args.mirror, compile=args.compile)
    cli.update(shared_cli_values(args))
    file_values = load_yaml(args.config, TeacherConfig) if args.config else {}
    out = cli["out"] or file_values.get("out")
    if not out:
        raise UserError("no run folder given (add --out RUN)")
    run_dir = Path(out)
    from distilgan.utils.paths import check_output_dir

    check_output_dir(run_dir, "--out")  # an existing run folder is fine: --resume continues it
    state = None
    if args.resume:
        from distilgan.train.config import legacy_notice

        state = load_state(run_dir / STATE_PATH)
        config = resolve_config(cli, file_values, saved=state["config"], cls=TeacherConfig)
        check_resume_compatible(state["config"], config, TEACHER_FREE_KEYS)
        notice = legacy_notice(state["config"])
        if notice:
            print(f"train-teacher: {notice}")
    else:
        if (run_dir / STATE_PATH).exists():
            raise UserError(f"{run_dir} already holds a training run (add --resume to continue it, or pick another --out)")
        config = resolve_config(cli, file_values, cls=TeacherConfig)
    if not config.data:
        raise UserError("no dataset given (add --data DATASET, e.g. cifar10 or a packed .npz)")
    _validate(config)
    for option in ("--metric-n", "--metric-every", "--metric-ref", "--metric-classifier"):
        argtypes.refuse_unless(args, option, bool(config.metrics), "sets up the in-loop metrics, and no --metrics are asked for")
    resolve_device(config.device)  # a bad --device fails before the dataset is decoded
    return config, run_dir, state


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.data.datasets import open_dataset
    from distilgan.models import BigGANDiscriminator, BigGANGenerator
    from distilgan.train.config import save_config
    from distilgan.train.losses import GANObjective
    from distilgan.train.batches import RealBatches
    from distilgan.train.distributed import setup_distributed, teardown_distributed
    from distilgan.train.training_loop import Trainer

    config, run_dir, state = _resolve(args)
    data = open_dataset(config.data, "train")
    resolution, channels = data.resolution, data.channels

    dist = setup_distributed(config.device)
    try:
        cuda = dist.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(config.seed)  # same initial weights on every rank (rank 0's are broadcast anyway)
        try:
            generator = BigGANGenerator(z_dim=config.z_dim, num_classes=data.num_classes, ch=config.ch,
                                        resolution=resolution, channels=channels, shared_dim=config.shared_dim,
                                        class_names=data.class_names)
            discriminator = BigGANDiscriminator(num_classes=data.num_classes, ch=config.d_ch,
                                                resolution=resolution, channels=channels)
        except ValueError as err:  # e.g. an unsupported resolution
            raise UserError(f"cannot build the models for {config.data}: {err}") from None
        objective = GANObjective(
            generator.to(dist.device), discriminator.to(dist.device), z_dim=config.z_dim,
            num_classes=data.num_classes, d_steps=config.d_steps, policy=config.diffaugment, lecam=config.lecam,
            compile=config.compile and cuda, seed=config.seed, rank=dist.rank,
        )
        source = RealBatches(data.images, data.labels, config.batch_size, config.seed, dist, mirror=config.mirror)
        from distilgan.train.run_options import build_loop_metrics

        from distilgan.utils.noise import sample_z

        def z_sampler(generator, n):  # the teacher's own z: N(0, I), as the objective draws it
            return sample_z(generator, n, config.z_dim)

        metrics = build_loop_metrics(config, run_dir, config.data, z_sampler, list(range(data.num_classes)), dist.device)
        trainer = Trainer(config, generator, discriminator, objective, source, run_dir, dist, name="train-teacher",
                          metrics=metrics)
        if state is not None:
            trainer.load_state_dict(state)
        if dist.is_main:
            save_config(config, run_dir / "config.yaml")
            if config.compile and not cuda:
                print("train-teacher: --compile is for CUDA; training without it on the CPU")
            print(f"train-teacher: precision {trainer.precision} ({trainer.precision_reason})"
                  f"{', channels_last ' + '+'.join(trainer.channels_last) if trainer.channels_last else ''}")
            g_params = sum(p.numel() for p in generator.parameters())
            d_params = sum(p.numel() for p in discriminator.parameters())
            print(f"train-teacher: {len(data)} images {resolution}x{resolution}, {data.num_classes} classes; "
                  f"G {g_params:,} / D {d_params:,} parameters; {source.steps_per_epoch} D steps/epoch, "
                  f"{trainer.total_steps} D steps ({config.d_steps} per G step), {dist.world_size} process(es) "
                  f"on {dist.device}")
        if trainer.step >= trainer.total_steps:
            if dist.is_main:
                print(f"train-teacher: {run_dir} has already finished its {trainer.total_steps} steps")
            return 0
        result = trainer.fit(resumed=state is not None)
        if dist.is_main:
            print(f"train-teacher: done at step {result['step']} (epoch {result['epoch']}); "
                  f"generator in {run_dir / 'generator'}")
            if "best" in result:
                print(f"train-teacher: {result['best']['summary']}")
        return 0
    finally:
        teardown_distributed()
