"""Training objectives: what each step minimises. The loop (training_loop.py) knows none of this.

An objective holds G and D (plain modules, not DDP wrappers) and exposes

* ``discriminator_loss(batch) -> (total, terms)`` and ``generator_loss(batch, step) -> (total, terms)``,
  ``terms`` a dict of named scalars that the loop logs as they are;
* ``generator_update_due(step) -> bool`` (a WGAN-style objective may skip G steps);
* ``generators() -> {name: torch.Generator}``, its own random streams, saved with the training state;
* ``state_dict()`` / ``load_state_dict()`` for anything else it must carry across a resume.

A batch is a dict of tensors on the training device: ``z``, ``labels``, ``teacher_images`` (the
distillation store) and, with real data, ``real_images``, ``real_labels``. Images are NCHW in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilgan.utils.noise import ZDistribution, rng

# TinyGAN / DiStyleGAN: deeper D blocks see more semantic features and weigh more.
FEATURE_WEIGHTS = (1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
# weight of G's adversarial term on fresh z (relative to lambda_gan_g), as in the reference
FRESH_Z_GAN_WEIGHT = 0.2

NOISE_STREAM = 0x5EED  # distinguishes this stream from the other uses of the run's seed
PIXEL_SCHEDULES = ("constant", "epoch-linear", "step-linear")

Terms = dict[str, Tensor]


def hinge_d_real(logits: Tensor) -> Tensor:
    return F.relu(1.0 - logits.float()).mean()


def hinge_d_fake(logits: Tensor) -> Tensor:
    return F.relu(1.0 + logits.float()).mean()


def hinge_g(logits: Tensor) -> Tensor:
    return -logits.float().mean()


def feature_l1(student: list[Tensor], teacher: list[Tensor], weights: tuple[float, ...] = FEATURE_WEIGHTS) -> Tensor:
    """Weighted sum of mean absolute differences between matching D block features."""
    if len(student) != len(weights) or len(teacher) != len(weights):
        raise ValueError(f"expected {len(weights)} feature maps, got {len(student)} and {len(teacher)}")
    total = student[0].new_zeros((), dtype=torch.float32)
    for weight, s, t in zip(weights, student, teacher):
        total = total + weight * F.l1_loss(s.float(), t.detach().float())
    return total


class Objective:
    """The protocol's defaults: no state beyond the random streams, a G update every step, D trained."""

    trains_discriminator = True

    def generators(self) -> dict[str, torch.Generator]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def generator_update_due(self, step: int) -> bool:
        return True


class DistillationObjective(Objective):
    """Black-box distillation (TinyGAN, DiStyleGAN) of a teacher's (z, y) -> image pairs.

    G: sum_i w_i |D_i(G(z,y)) - D_i(T(z,y))|  +  lambda_pixel(epoch) |G(z,y) - T(z,y)|
       and every ``gstep`` steps  lambda_gan_g * hinge_G(D(G(z,y), y))
                                  + 0.2 * lambda_gan_g * hinge_G(D(G(z', y'), y')).
    D: hinge(D(T(z,y), y) real, D(G(z,y), y) fake)
       + lambda_gan_d * hinge(D(x, y_x) real, D(G(z', y_x), y_x) fake)     (only with real data)

    z' is fresh noise from the distribution the store's z came from (``z_sampler``). y' are the real
    batch's labels with real data; without real data they are balanced random labels over the
    store's classes (every class equally often, shuffled), so the fresh-z term still pushes G towards
    images D accepts for classes it has not just seen paired with a teacher image.

    G(z, y) and G(z', y') are separate forward passes, as in TinyGAN's solver and DiStyleGAN's
    update_G: with BatchNorm in training mode a joint pass would normalise the teacher-z batch with
    statistics that include the fresh batch, so the pixel term would differ between adversarial and
    non-adversarial steps. D sees one concatenated batch (its layers have no batch statistics).

    lambda_pixel: ``constant`` (DiStyleGAN), ``epoch-linear`` (TinyGAN: ``pixel_decay`` subtracted
    once per epoch, ``max(0, 0.2 - 0.01 * epoch)``, a 20-epoch warm-down) or ``step-linear`` (per G
    step; how runs made before the schedule key decayed it).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        z_dim: int,
        num_classes: int,
        lambda_pixel: float = 0.2,
        pixel_schedule: str = "constant",
        pixel_decay: float = 0.01,
        steps_per_epoch: int = 1,
        lambda_gan_g: float = 0.01,
        lambda_gan_d: float = 0.2,
        gstep: int = 10,
        classes: list[int] | None = None,
        z_distribution: ZDistribution | None = None,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if pixel_schedule not in PIXEL_SCHEDULES:
            raise ValueError(f"unknown pixel schedule {pixel_schedule!r} (choose from {', '.join(PIXEL_SCHEDULES)})")
        self.G, self.D = generator, discriminator
        self.z_dim, self.num_classes = z_dim, num_classes
        # the labels fresh z is drawn for: the store's classes (a subset of the teacher's, in its order)
        self.classes = torch.as_tensor(list(range(num_classes)) if classes is None else list(classes), dtype=torch.long)
        self.z_distribution = z_distribution or ZDistribution()
        self.lambda_pixel, self.pixel_schedule, self.pixel_decay = lambda_pixel, pixel_schedule, pixel_decay
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.lambda_gan_g, self.lambda_gan_d, self.gstep = lambda_gan_g, lambda_gan_d, gstep
        # fresh z and labels: a CPU stream of our own (per DDP rank), saved with the training state
        self.noise = torch.Generator().manual_seed(int(rng(seed, NOISE_STREAM, rank).integers(2**62)))

    # -- bookkeeping --------------------------------------------------------------------------
    def generators(self) -> dict[str, torch.Generator]:
        return {"objective_noise": self.noise}

    def lambda_pixel_at(self, step: int) -> float:
        """lambda_pixel at loop step ``step`` (epoch = step // steps_per_epoch, as the loop counts)."""
        if self.pixel_schedule == "constant":
            return self.lambda_pixel
        if self.pixel_schedule == "epoch-linear":
            return max(0.0, self.lambda_pixel - self.pixel_decay * (step // self.steps_per_epoch))
        return max(0.0, self.lambda_pixel - self.pixel_decay * step)  # step-linear (legacy)

    def adversarial_due(self, step: int) -> bool:
        return step % self.gstep == 0

    # -- noise ------------------------------------------------------------------------------------
    def fresh_z(self, n: int, device: torch.device) -> Tensor:
        """z' from the store's distribution (normal, or one of the truncations)."""
        return self.z_distribution.sample_torch(self.noise, n, self.z_dim).to(device)

    def balanced_labels(self, n: int, device: torch.device) -> Tensor:
        count = len(self.classes)
        offset = int(torch.randint(count, (1,), generator=self.noise))
        labels = self.classes[(torch.arange(n) + offset) % count]
        return labels[torch.randperm(n, generator=self.noise)].to(device)

    def fresh_labels(self, batch: dict[str, Tensor]) -> Tensor:
        if "real_labels" in batch:
            return batch["real_labels"]
        return self.balanced_labels(batch["labels"].shape[0], batch["labels"].device)

    # -- losses -----------------------------------------------------------------------------------
    def discriminator_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Terms]:
        z, labels, teacher = batch["z"], batch["labels"], batch["teacher_images"]
        n = z.shape[0]
        has_real = "real_images" in batch
        with torch.no_grad():
            if has_real:
                real_labels = batch["real_labels"]
                fresh = self.fresh_z(real_labels.shape[0], z.device)
                # separate G passes: BN batch statistics of one distribution each (see the class doc)
                fakes, fresh_fakes = self.G(z, labels), self.G(fresh, real_labels)
                images = torch.cat([teacher, fakes, batch["real_images"], fresh_fakes.to(fakes.dtype)])
                all_labels = torch.cat([labels, labels, real_labels, real_labels])
            else:
                images = torch.cat([teacher, self.G(z, labels)])
                all_labels = torch.cat([labels, labels])
        # one D forward for every image: one spectral-norm update and fewer kernel launches per step
        logits, features = self.D(images.detach(), all_labels)
        # the teacher images' D features for this step's G loss come from D *before* its update, as in
        # TinyGAN's solver (real_list) and DiStyleGAN's update_D (features_teacher); it also saves a D pass
        self._teacher_features = (teacher, [f[:n].detach() for f in features])
        terms: Terms = {
            "d/teacher_real": hinge_d_real(logits[:n]),
            "d/student_fake": hinge_d_fake(logits[n : 2 * n]),
        }
        total = terms["d/teacher_real"] + terms["d/student_fake"]
        if has_real:
            m = batch["real_labels"].shape[0]
            terms["d/real"] = hinge_d_real(logits[2 * n : 2 * n + m])
            terms["d/real_fake"] = hinge_d_fake(logits[2 * n + m :])
            total = total + self.lambda_gan_d * (terms["d/real"] + terms["d/real_fake"])
        terms["d/total"] = total
        return total, terms

    def generator_loss(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Terms]:
        z, labels, teacher = batch["z"], batch["labels"], batch["teacher_images"]
        n = z.shape[0]
        adversarial = self.adversarial_due(step) and self.lambda_gan_g > 0
        if adversarial:
            fresh_labels = self.fresh_labels(batch)
            fresh = self.fresh_z(fresh_labels.shape[0], z.device)
            students = self.G(z, labels)  # separate G passes (see the class doc); one D pass
            fresh_students = self.G(fresh, fresh_labels)
            logits, student_features = self.D(torch.cat([students, fresh_students.to(students.dtype)]),
                                              torch.cat([labels, fresh_labels]))
            student_features = [f[:n] for f in student_features]
        else:
            students = self.G(z, labels)
            logits, student_features = self.D(students, labels)
        stash, self._teacher_features = getattr(self, "_teacher_features", None), None
        if stash is not None and stash[0] is teacher:
            teacher_features = stash[1]
        else:  # a G loss without this step's D loss (tests, fine-tuning): D as it is now
            with torch.no_grad():
                _, teacher_features = self.D(teacher, labels)
        lambda_pixel = self.lambda_pixel_at(step)
        terms: Terms = {
            "g/feature": feature_l1(student_features, teacher_features),
            "g/pixel": F.l1_loss(students[:n].float(), teacher.float()),
        }
        total = terms["g/feature"] + lambda_pixel * terms["g/pixel"]
        if adversarial:
            terms["g/gan"] = hinge_g(logits[:n])
            terms["g/gan_fresh"] = hinge_g(logits[n:])
            total = total + self.lambda_gan_g * (terms["g/gan"] + FRESH_Z_GAN_WEIGHT * terms["g/gan_fresh"])
        terms["g/total"] = total
        terms["g/lambda_pixel"] = torch.tensor(lambda_pixel)
        return total, terms


class GANObjective(Objective):
    """A class-conditional GAN on real data (the BigGAN-style teacher, or the student's networks from
    scratch as the distillation baseline): hinge loss + DiffAugment.

    One loop step is one D step on a real batch; G steps after every ``d_steps`` D steps (BigGAN's
    num_D_steps), on fresh z and uniformly drawn labels.

    D: mean relu(1 - D(A(x), y_x)) + mean relu(1 + D(A(G(z, y)), y))  [+ lecam * R_LC]
    G: -mean D(A(G(z', y')), y')

    A is DiffAugment with ``policy`` (empty: none), fresh random numbers on every call, applied to
    real and fake images alike so D never sees an unaugmented image and G's gradient flows through A.
    R_LC (LeCam, Tseng et al. 2021) = mean relu(D(real) - ema_fake)^2 + mean relu(ema_real - D(fake))^2,
    with ema_* exponential averages (decay ``lecam_decay``) of D's mean outputs, kept on the device
    and saved with the training state.
    ``compile`` wraps G and D in torch.compile for the forward passes of the loss (CUDA only: the
    trainer keeps the plain modules for saving, EMA and grids); the augmentation's random numbers
    are drawn eagerly, outside the compiled graphs.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        z_dim: int,
        num_classes: int,
        d_steps: int = 4,
        policy: str = "translation,cutout",
        lecam: float = 0.0,
        lecam_decay: float = 0.99,
        compile: bool = False,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        from distilgan.train.augment import parse_policy

        if d_steps < 1:
            raise ValueError("d_steps must be >= 1")
        parse_policy(policy)  # a bad policy fails now, not at the first step
        self.G, self.D = generator, discriminator
        self.G_forward = torch.compile(generator) if compile else generator
        self.D_forward = torch.compile(discriminator) if compile else discriminator
        self.z_dim, self.num_classes, self.d_steps = z_dim, num_classes, d_steps
        self.policy, self.lecam, self.lecam_decay = policy, lecam, lecam_decay
        self.noise = torch.Generator().manual_seed(int(rng(seed, NOISE_STREAM, rank).integers(2**62)))
        self.ema_real: Tensor | None = None
        self.ema_fake: Tensor | None = None

    # -- bookkeeping --------------------------------------------------------------------------
    def generators(self) -> dict[str, torch.Generator]:
        return {"objective_noise": self.noise}

    def state_dict(self) -> dict[str, Any]:
        return {"ema_real": self.ema_real, "ema_fake": self.ema_fake}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.D.parameters()).device
        for name in ("ema_real", "ema_fake"):
            value = state.get(name)
            setattr(self, name, value.to(device) if value is not None else None)

    def generator_update_due(self, step: int) -> bool:
        return (step + 1) % self.d_steps == 0

    # -- noise and augmentation -----------------------------------------------------------------
    def fresh_inputs(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """z ~ N(0, I) and uniform labels from the objective's own stream (same numbers on any device)."""
        z = torch.randn(n, self.z_dim, generator=self.noise)
        labels = torch.randint(self.num_classes, (n,), generator=self.noise)
        return z.to(device), labels.to(device)

    def augment(self, images: Tensor) -> Tensor:
        from distilgan.train.augment import apply_augment, draw_params

        if not self.policy:
            return images
        return apply_augment(images, self.policy, draw_params(images, self.policy, self.noise))

    def _lecam_term(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        real_mean, fake_mean = real_logits.detach().float().mean(), fake_logits.detach().float().mean()
        if self.ema_real is None:  # first step: start the averages at the current outputs
            self.ema_real, self.ema_fake = real_mean.clone(), fake_mean.clone()
        else:
            self.ema_real = torch.lerp(self.ema_real, real_mean, 1.0 - self.lecam_decay)
            self.ema_fake = torch.lerp(self.ema_fake, fake_mean, 1.0 - self.lecam_decay)
        return (F.relu(real_logits.float() - self.ema_fake).pow(2).mean()
                + F.relu(self.ema_real - fake_logits.float()).pow(2).mean())

    # -- losses -----------------------------------------------------------------------------------
    def _logits(self, images: Tensor, labels: Tensor) -> Tensor:
        out = self.D_forward(images, labels)
        return out[0] if isinstance(out, tuple) else out  # DiStyleGAN's D also returns its features

    def discriminator_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Terms]:
        real, real_labels = batch["real_images"], batch["real_labels"]
        n = real.shape[0]
        z, fake_labels = self.fresh_inputs(n, real.device)
        with torch.no_grad():
            fakes = self.G_forward(z, fake_labels)
        # each half its own draw; one D forward for both (one spectral-norm update per step)
        images = torch.cat([self.augment(real), self.augment(fakes.to(real.dtype))])
        logits = self._logits(images.detach(), torch.cat([real_labels, fake_labels]))
        terms: Terms = {"d/real": hinge_d_real(logits[:n]), "d/fake": hinge_d_fake(logits[n:])}
        total = terms["d/real"] + terms["d/fake"]
        terms["d/real_logit"] = logits[:n].detach().float().mean()
        terms["d/fake_logit"] = logits[n:].detach().float().mean()
        if self.lecam > 0:
            terms["d/lecam"] = self._lecam_term(logits[:n], logits[n:])
            total = total + self.lecam * terms["d/lecam"]
        terms["d/total"] = total
        return total, terms

    def generator_loss(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Terms]:
        n = batch["real_labels"].shape[0]
        z, labels = self.fresh_inputs(n, batch["real_labels"].device)
        logits = self._logits(self.augment(self.G_forward(z, labels)), labels)
        terms: Terms = {"g/gan": hinge_g(logits)}
        terms["g/total"] = terms["g/gan"]
        return terms["g/total"], terms
