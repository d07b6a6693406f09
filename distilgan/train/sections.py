"""The sections of a run's configuration, one dataclass each, and ``opt``, the field every key is made
with (its help, checks and whether ``--resume`` may change it). Which kind of run uses which sections
is ``config.KINDS``; everything that reads, merges and checks them is in config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from distilgan.utils import argtypes


def opt(default: Any, help: str, *, check: str | None = None, free: bool = False,
        choices: tuple[str, ...] | None = None, argtype: Callable[[str], Any] | None = None,
        nargs: str | None = None) -> Any:
    """A config field. ``check``: positive, nonneg or decay ([0, 1)); ``free``: may differ on --resume
    (where files are, which machine, how often things are written, how long to train)."""
    meta = {"help": help, "check": check, "free": free, "choices": choices, "argtype": argtype, "nargs": nargs}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- sections


@dataclass
class DistillDataConfig:
    data: str = opt("", "distillation set folder (made by distilgan sample)", free=True)
    real: str | None = opt(None, "real dataset for the adversarial term (cifar10, a folder, zip or .npz)", free=True)
    out: str = opt("", "run folder (config, logs, grids, checkpoints, training state)", free=True)
    workers: int = opt(2, "DataLoader worker processes of a streamed store", check="nonneg", free=True)
    store_in_memory: bool | None = opt(None, "read the store into memory once and batch by index, same order as "
                                       "streaming (default: when it fits in 4 GiB)", free=True)


@dataclass
class TeacherDataConfig:
    data: str = opt("", "real dataset: cifar10, a class folder or zip, an .npz (also a packed JPEG .npz)", free=True)
    out: str = opt("", "run folder (config, logs, grids, checkpoints, training state)", free=True)
    mirror: bool = opt(True, "flip a random half of the real images left-right each epoch")


@dataclass
class FinetuneDataConfig:
    out: str = opt("", "fine-tuning run folder", free=True)
    workers: int = opt(0, "unused by the noise batches of fine-tuning", check="nonneg", free=True)


@dataclass
class LoopConfig:
    """What the one training loop reads. A step is one update of D (and G when due): for
    train-teacher that is one D step, so --max-steps, --ema-start and --log-every count D steps."""

    batch_size: int = opt(128, "global batch size, split over DDP processes (train-teacher: real images per D step)",
                          check="positive")
    epochs: int = opt(150, "passes over the data", check="positive", free=True)
    max_steps: int | None = opt(None, "stop after this many steps", check="positive", free=True)
    max_minutes: float | None = opt(None, "wall-time budget of this invocation in minutes: at the first step past it "
                                    "the run saves its checkpoint, grid and metrics and ends (exit 0); --resume "
                                    "continues it", check="positive", free=True)
    lr_g: float = opt(2e-4, "generator Adam learning rate", check="positive")
    lr_d: float = opt(2e-4, "discriminator Adam learning rate", check="positive")
    beta1: float = opt(0.5, "Adam beta1", check="decay")
    beta2: float = opt(0.999, "Adam beta2", check="decay")
    lr_decay_start: int | None = opt(None, "decay both LRs linearly to 0 from this step to the last "
                                     "(default: constant LR)", check="nonneg")
    ema: bool = opt(True, "keep an EMA copy of G and ship it (--no-ema ships the raw G)")
    ema_kimg: float | None = opt(88.7, "half-life of the EMA copy in thousands of images G is trained on "
                                 "(StyleGAN's ema_kimg: decay 0.5 ** (batch / half-life) per update, the same "
                                 "averaging at any batch size)", check="positive")
    ema_rampup: float | None = opt(None, "StyleGAN's EMA ramp-up: the half-life is at most this fraction of the "
                                   "images seen so far (e.g. 0.05; default: off)", check="positive")
    ema_decay: float | None = opt(None, "a fixed decay per update instead of --ema-kimg (what runs made before "
                                  "--ema-kimg used, 0.999)", check="decay")
    ema_start: int = opt(0, "step from which G is averaged; before it the copy follows G (BigGAN's ema_start)",
                         check="nonneg")
    ema_buffers: str = opt("recompute", "BatchNorm statistics of the EMA copy: recompute (averaged like the "
                           "weights and re-estimated on its own outputs at every save), average, or copy (the raw "
                           "G's, as before)", choices=("average", "copy", "recompute"))
    ckpt_every: int = opt(10, "save checkpoint + training state every this many epochs", check="positive", free=True)
    ckpt_every_steps: int | None = opt(None, "also save checkpoint + training state every this many steps",
                                       check="positive", free=True)
    ckpt_every_minutes: float | None = opt(10.0, "also save every this many minutes of wall time (0: off)",
                                           check="nonneg", free=True)
    ckpt_keep: int | None = opt(None, "keep only the newest N step checkpoints in RUN/checkpoints (default: all)",
                                check="positive", free=True)
    grid_every: int = opt(1, "save the fixed sample grid every this many epochs", check="positive", free=True)
    log_every: int = opt(10, "log every loss term every this many steps", check="positive", free=True)
    grid_columns: int = opt(10, "samples per class row in the grid", check="positive")
    seed: int = opt(0, "seed of model init, data order and noise", argtype=argtypes.seed)
    device: str = opt("auto", "auto, cpu or cuda", free=True)
    amp: bool = opt(False, "legacy spelling of --precision bf16 on CUDA", free=True)
    precision: str = opt("auto", "auto, fp32 or bf16 autocast (auto: bf16 on a CPU with AMX or AVX-512 BF16 when "
                         "a short probe at start shows it faster, and on CUDA GPUs with bf16; losses, EMA and "
                         "optimiser states stay fp32)", choices=("auto", "fp32", "bf16"), free=True)
    channels_last: bool | None = opt(None, "NHWC activations (default: each network's preference: on for BigGAN, "
                                     "off for DiStyleGAN, whose BatchNorm backward is slower in NHWC on CPU)", free=True)
    metrics: str = opt("", "metrics inside the loop: kid, fid, ca; for distill-i2i l1, psnr, flip (the first "
                       "chooses RUN/best/; default: none)",
                       free=True, nargs="+")
    metric_n: int = opt(1000, "samples per in-loop evaluation, and reference images", free=True,
                        argtype=argtypes.int_at_least(2, "metrics need at least 2 samples"))
    metric_every: int | None = opt(None, "evaluate every this many steps (default: at every checkpoint)",
                                   check="positive", free=True)
    metric_ref: str | None = opt(None, "reference of the in-loop metrics: a `distilgan stats` .npz, a store folder "
                                 "or a dataset (default: the run's real data, else its distillation set)", free=True)
    metric_classifier: str | None = opt(None, "judge of the in-loop 'ca' (class agreement) and 'flip' metrics: cifar10-resnet56 "
                                        "(default), a CIFAR ResNet .th file or a classifier folder", free=True)


@dataclass
class StudentModelConfig:
    # None: the model class's own default, recorded when the run starts
    ngf: int | None = opt(None, "generator width (default: the model's, 256)", check="positive")
    ndf: int | None = opt(None, "discriminator width (default: the model's, 128)", check="positive")
    project_dim: int | None = opt(None, "projection size in G and D (default: the model's, 128)", check="positive")


@dataclass
class DistillObjectiveConfig:
    lambda_pixel: float = opt(0.2, "weight of the pixel L1 term", check="nonneg")
    pixel_schedule: str = opt("constant", "lambda-pixel schedule: constant (DiStyleGAN) or epoch-linear (TinyGAN: "
                              "--pixel-decay subtracted once per epoch, 0.2 - 0.01 per epoch = a 20-epoch warm-down); "
                              "step-linear is how runs made before this key decayed it",
                              choices=("constant", "epoch-linear", "step-linear"))
    pixel_decay: float = opt(0.01, "with --pixel-schedule epoch-linear: subtracted from lambda-pixel per epoch, "
                             "down to 0 (TinyGAN's value)", check="nonneg")
    lambda_gan_g: float = opt(0.01, "weight of G's adversarial terms", check="nonneg")
    lambda_gan_d: float = opt(0.2, "weight of D's real-data hinge term", check="nonneg")
    gstep: int = opt(10, "G's adversarial terms every this many steps", check="positive")


@dataclass
class TeacherModelConfig:
    # distylegan trains the student's own networks from scratch on the real data: the baseline a
    # distilled student must beat (same loop, hinge loss and DiffAugment as the teacher)
    arch: str = opt("biggan", "networks: biggan (the BigGAN-style teacher) or distylegan (the DiStyleGAN student's "
                    "G and D, trained from scratch: the distillation baseline)", choices=("biggan", "distylegan"))
    ch: int = opt(256, "biggan: generator width, channels of every G block", check="positive")
    d_ch: int = opt(256, "biggan: discriminator width", check="positive")
    z_dim: int | None = opt(None, "latent size (default: the architecture's, 128 for biggan, a multiple of the number "
                            "of G blocks + 1; 512 for distylegan)", check="positive")
    shared_dim: int = opt(128, "biggan: shared class embedding size, 0 for one-hot conditioning", check="nonneg")
    ngf: int | None = opt(None, "distylegan: generator width (default: the model's, 256)", check="positive")
    ndf: int | None = opt(None, "distylegan: discriminator width (default: the model's, 128)", check="positive")
    project_dim: int | None = opt(None, "distylegan: projection size in G and D (default: the model's, 128)",
                                  check="positive")


@dataclass
class GANObjectiveConfig:
    d_steps: int = opt(4, "D steps per G step", check="positive")
    diffaugment: str = opt("translation,cutout", "DiffAugment policy on real and fake images, a comma list of "
                           "color, translation, cutout; '' for none")
    lecam: float = opt(0.0, "LeCam regularisation weight, 0 = off (0.3 in StudioGAN)", check="nonneg")
    # compile changes speed, not the maths: it may differ on --resume like the device
    compile: bool = opt(False, "torch.compile G and D on CUDA (ignored on CPU)", free=True)


@dataclass
class I2IDataConfig:
    data: str = opt("", "pair set folder (made by distilgan pairs)", free=True)
    out: str = opt("", "run folder (config, logs, grids, checkpoints, training state)", free=True)
    filtered: bool = opt(True, "train on the pairs the set's classifier filter kept (--no-filtered: on every pair, "
                         "the comparison that shows what filtering buys)")
    min_confidence: float | None = opt(None, "filter threshold instead of the set's own: both images' class "
                                       "confidence must reach it", check="nonneg")
    holdout: int = opt(256, "pairs held out of training (the set's last, every edit alike) for the grid and the "
                       "in-loop metrics", check="nonneg")
    mirror: bool = opt(True, "flip a random half of the pairs left-right, source and target together")


@dataclass
class I2IModelConfig:
    ngf: int = opt(32, "translator width: channels of its first U-Net level", check="positive")
    depth: int | None = opt(None, "U-Net levels (default: the model's, down to a 4x4 bottleneck)", check="positive")
    separable: bool = opt(False, "depthwise-separable convolutions in the translator (the light variant)")
    norm: str = opt("batch", "translator normalisation: batch (folds into the convolutions for export), instance "
                    "or none", choices=("batch", "instance", "none"))
    ndf: int = opt(64, "PatchGAN discriminator width", check="positive")
    d_layers: int | None = opt(None, "PatchGAN stride-2 layers (default: the model's)", check="positive")


@dataclass
class I2IObjectiveConfig:
    lambda_l1: float = opt(100.0, "weight of the L1 distance to the teacher's edited image (pix2pix's 100)",
                           check="nonneg")
    lambda_feature: float = opt(10.0, "weight of the L1 between D's features of the student's and the teacher's "
                                "edited image (pix2pixHD's feature matching, 10)", check="nonneg")
    lambda_gan: float = opt(1.0, "weight of G's hinge adversarial term", check="nonneg")


@dataclass
class EncoderDataConfig:
    data: str = opt("", "distillation set folder (made by distilgan sample): the teacher's own (z, label, image)",
                    free=True)
    out: str = opt("", "run folder (config, logs, grids, checkpoints, training state)", free=True)
    teacher: str | None = opt(None, "teacher that draws the grid's reconstructions T(E(x), y) (default: the set's "
                              "own, from its manifest; 'none' for a grid of the inputs alone)", free=True)


@dataclass
class EncoderModelConfig:
    ndf: int = opt(64, "encoder width: channels of its first block", check="positive")


@dataclass
class EmptySection:
    pass
