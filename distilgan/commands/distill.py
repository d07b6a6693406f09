"""``distilgan distill``: train a DiStyleGAN student from a distillation store (and optional real data).

    distilgan distill --data STORE --out RUN [--real DATASET] [--config FILE.yaml] [options]
    torchrun --nproc_per_node 2 -m distilgan distill ...      # DDP, same files

Settings resolve as: options given > --config file > the run being resumed > defaults; the result is
written to RUN/config.yaml. See docs/training.md.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, Callable

from distilgan.errors import UserError
from distilgan.train.run_options import add_shared_options, shared_cli_values
from distilgan.utils import argtypes

# (option, config key, type, help); every one defaults to None so "not given" is visible.
OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("--ngf", "ngf", argtypes.positive_int, "generator width (default: the model's, 256)"),
    ("--ndf", "ndf", argtypes.positive_int, "discriminator width (default: the model's, 128)"),
    ("--project-dim", "project_dim", argtypes.positive_int, "projection size in G and D (default: the model's, 128)"),
    ("--batch-size", "batch_size", argtypes.positive_int, "global batch size, split over DDP processes (default 128)"),
    ("--epochs", "epochs", argtypes.positive_int, "passes over the store (default 150)"),
    ("--max-steps", "max_steps", argtypes.positive_int, "stop after this many steps (default: no limit)"),
    ("--lr-g", "lr_g", argtypes.positive_float, "generator Adam learning rate (default 2e-4)"),
    ("--lr-d", "lr_d", argtypes.positive_float, "discriminator Adam learning rate (default 2e-4)"),
    ("--beta1", "beta1", argtypes.decay, "Adam beta1 (default 0.5)"),
    ("--beta2", "beta2", argtypes.decay, "Adam beta2 (default 0.999)"),
    ("--lambda-pixel", "lambda_pixel", argtypes.nonneg_float, "weight of the pixel L1 term (default 0.2)"),
    ("--pixel-schedule", "pixel_schedule", str,
     "lambda-pixel schedule: constant (default, DiStyleGAN) or epoch-linear (TinyGAN: --pixel-decay subtracted "
     "once per epoch, 0.2 - 0.01 per epoch = a 20-epoch warm-down)"),
    ("--pixel-decay", "pixel_decay", argtypes.nonneg_float,
     "with --pixel-schedule epoch-linear: subtracted from lambda-pixel per epoch, down to 0 (default 0.01, "
     "TinyGAN's value)"),
    ("--lambda-gan-g", "lambda_gan_g", argtypes.nonneg_float, "weight of G's adversarial terms (default 0.01)"),
    ("--lambda-gan-d", "lambda_gan_d", argtypes.nonneg_float, "weight of D's real-data hinge term (default 0.2)"),
    ("--gstep", "gstep", argtypes.positive_int, "G's adversarial terms every this many steps (default 10)"),
    ("--lr-decay-start", "lr_decay_start", argtypes.nonneg_int,
     "decay both LRs linearly to 0 from this step to the last (default: constant LR)"),
    ("--ema-decay", "ema_decay", argtypes.decay, "decay of the EMA copy of G (default 0.999)"),
    ("--ckpt-every", "ckpt_every", argtypes.positive_int, "save checkpoint + training state every this many epochs (default 10)"),
    ("--ckpt-every-steps", "ckpt_every_steps", argtypes.positive_int,
     "also save checkpoint + training state every this many steps (default: only by epochs)"),
    ("--grid-every", "grid_every", argtypes.positive_int, "save the fixed sample grid every this many epochs (default 1)"),
    ("--log-every", "log_every", argtypes.positive_int, "log every loss term every this many steps (default 10)"),
    ("--grid-columns", "grid_columns", argtypes.positive_int, "samples per class row in the grid (default 10)"),
    ("--seed", "seed", argtypes.seed, "seed of model init, data order and noise (default 0)"),
    ("--device", "device", str, "auto, cpu or cuda (default auto)"),
    ("--workers", "workers", argtypes.nonneg_int, "DataLoader worker processes (default 2)"),
]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="train a student generator from a distillation set",
        description="Train a DiStyleGAN student on a teacher's (z, label, image) store with TinyGAN-style "
        "black-box distillation; --real adds a GAN term on real images. Run under torchrun for DDP.",
    )
    parser.add_argument("--data", help="distillation set folder (made by distilgan sample)")
    parser.add_argument("--out", help="run folder (config, logs, grids, checkpoints, training state)")
    parser.add_argument("--real", help="real dataset for the adversarial term (cifar10, a folder, zip or .npz)")
    parser.add_argument("--config", help="YAML file of settings (keys as the options, e.g. lr_g: 2.0e-4)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where its state stops")
    for flag, key, kind, text in OPTIONS:
        parser.add_argument(flag, dest=key, type=kind, default=None, help=text)
    parser.add_argument("--ema", dest="ema", action=argparse.BooleanOptionalAction, default=None,
                        help="keep an EMA copy of G and ship it (default on; --no-ema ships the raw G)")
    parser.add_argument("--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None,
                        help="legacy spelling of --precision bf16 on CUDA")
    parser.add_argument("--store-in-memory", dest="store_in_memory", action=argparse.BooleanOptionalAction,
                        default=None, help="read the store into memory once and batch by index, same order as "
                        "streaming (default: when it fits in 4 GiB)")
    parser.add_argument("--no-verify-shards", dest="no_verify_shards", action="store_true",
                        help="skip the sha256 check of each shard against the manifest when first read "
                        "(for huge sets already checked with distilgan verify)")
    add_shared_options(parser)
    argtypes.retype(parser, argtypes.SHARED_OPTION_TYPES)
    parser.set_defaults(func=run)


def _model_default(cls: type, name: str) -> Any:
    return inspect.signature(cls.__init__).parameters[name].default


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
    from distilgan.train.config import check_resume_compatible, load_yaml, resolve_config, save_config
    from distilgan.train.losses import DistillationObjective
    from distilgan.train.state import load_state
    from distilgan.train.batches import RealSampler, StoreBatches
    from distilgan.train.distributed import setup_distributed, teardown_distributed
    from distilgan.train.training_loop import STATE_PATH, Trainer
    from distilgan.utils.noise import ZDistribution

    cli = {key: getattr(args, key) for _, key, _, _ in OPTIONS}
    cli.update(data=args.data, out=args.out, real=args.real, ema=args.ema, amp=args.amp,
               store_in_memory=args.store_in_memory)
    cli.update(shared_cli_values(args))
    file_values = load_yaml(args.config) if args.config else {}
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
        config = resolve_config(cli, file_values, saved=state["config"])
        check_resume_compatible(state["config"], config)
        notice = legacy_notice(state["config"])
        if notice:
            print(f"distill: {notice}")
    else:
        if (run_dir / STATE_PATH).exists():
            raise UserError(f"{run_dir} already holds a training run (add --resume to continue it, or pick another --out)")
        config = resolve_config(cli, file_values)
    if not config.data:
        raise UserError("no distillation set given (add --data STORE)")
    argtypes.refuse_unless(args, "--pixel-decay", config.pixel_schedule != "constant",
                           "applies to --pixel-schedule epoch-linear only (the constant schedule keeps lambda-pixel fixed)")
    for option in ("--metric-n", "--metric-every", "--metric-ref", "--metric-classifier"):
        argtypes.refuse_unless(args, option, bool(config.metrics), "sets up the in-loop metrics, and no --metrics are asked for")

    from distilgan.store import set_shard_checks

    set_shard_checks(not getattr(args, "no_verify_shards", False))  # every store this run reads
    store = DistillationStore.open(config.data)
    real = None
    if config.real:
        from distilgan.data.datasets import open_dataset

        real = open_dataset(config.real, "train")
        _check_real_matches(store, real, config.real)
    for key, cls in (("ngf", DiStyleGANGenerator), ("ndf", DiStyleGANDiscriminator),
                     ("project_dim", DiStyleGANGenerator)):
        if getattr(config, key) is None:  # record the model's default in config.yaml
            setattr(config, key, _model_default(cls, key))

    dist = setup_distributed(config.device)
    try:
        if dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(config.seed)  # same initial weights on every rank (rank 0's are broadcast anyway)
        z_distribution = ZDistribution.from_dict(store.manifest.get("z_distribution"))
        # what the student was trained on travels in its config.json (every consumer defaults to it)
        provenance = {"z_distribution": z_distribution.to_dict(), "classes": store.classes,
                      "teacher_fingerprint": (store.manifest.get("teacher") or {}).get("fingerprint")}
        generator = DiStyleGANGenerator(
            z_dim=store.z_dim, num_classes=store.num_classes, project_dim=config.project_dim, ngf=config.ngf,
            resolution=store.resolution, channels=store.channels, class_names=store.class_names, **provenance,
        )
        discriminator = DiStyleGANDiscriminator(
            num_classes=store.num_classes, project_dim=config.project_dim, ndf=config.ndf,
            resolution=store.resolution, channels=store.channels,
        )
        objective = DistillationObjective(
            generator, discriminator, z_dim=store.z_dim, num_classes=store.num_classes,
            lambda_pixel=config.lambda_pixel, pixel_schedule=config.pixel_schedule, pixel_decay=config.pixel_decay,
            lambda_gan_g=config.lambda_gan_g, lambda_gan_d=config.lambda_gan_d, gstep=config.gstep,
            classes=store.classes, z_distribution=z_distribution, seed=config.seed, rank=dist.rank,
        )
        sampler = None
        if real is not None:
            sampler = RealSampler(real.images, real.labels, config.batch_size, config.seed, dist)
        source = StoreBatches(config.data, config.batch_size, config.seed, dist, workers=config.workers, real=sampler,
                              in_memory=config.store_in_memory)
        objective.steps_per_epoch = source.steps_per_epoch  # lambda_pixel's epoch-linear schedule counts epochs

        def z_sampler(generator_: Any, n: int) -> Any:
            return z_distribution.sample(generator_, n, store.z_dim)

        from distilgan.train.run_options import build_loop_metrics

        metrics = build_loop_metrics(config, run_dir, config.real or config.data, z_sampler, store.classes, dist.device)
        trainer = Trainer(config, generator, discriminator, objective, source, run_dir, dist, z_sampler=z_sampler,
                          metrics=metrics, classes=store.classes)
        if state is not None:
            trainer.load_state_dict(state)
        if dist.is_main:
            save_config(config, run_dir / "config.yaml")
            print(f"distill: precision {trainer.precision} ({trainer.precision_reason})"
                  f"{', channels_last ' + '+'.join(trainer.channels_last) if trainer.channels_last else ''}; z {z_distribution.describe()}, "
                  f"lambda-pixel {config.pixel_schedule}")
            mode = "with real data" if real is not None else "black-box only (no --real)"
            print(f"distill: {store.num_samples} samples, {source.steps_per_epoch} steps/epoch, "
                  f"{trainer.total_steps} steps, {dist.world_size} process(es) on {dist.device}, {mode}")
        if trainer.step >= trainer.total_steps:
            if dist.is_main:
                print(f"distill: {run_dir} has already finished its {trainer.total_steps} steps")
            return 0
        result = trainer.fit(resumed=state is not None)
        if dist.is_main:
            print(f"distill: done at step {result['step']} (epoch {result['epoch']}); generator in {run_dir / 'generator'}")
            if "best" in result:
                print(f"distill: {result['best']['summary']}")
        return 0
    finally:
        teardown_distributed()
