"""Fine-tuning a modified generator (pruned, or under fake quantisation) back towards its FP32 self,
inside the one training loop (training_loop.Trainer): a generator-only objective and a data source
that needs no dataset.

Objective (``trains_discriminator = False``: the loop takes no D step, D stays frozen):

    G: |G(z,y) - R(z,y)|  +  w * sum_i c_i |D_i(G(z,y)) - D_i(R(z,y))|       (D of the run: TinyGAN c_i)
       |G(z,y) - R(z,y)|  +  w * sum_j |F_j(G(z,y)) - F_j(R(z,y))|           (no D: fixed random conv F)
       |G(z,y) - R(z,y)|                                                     (w = 0)

R is the FP32 reference generator (the model before pruning / quantisation), D the trained
discriminator of the distill run that made the student (``discriminator_from_run``), c_i the block
weights of ``losses.FEATURE_WEIGHTS``.

Batch norm runs in eval mode throughout (running statistics frozen, affine parameters trained), so
what is optimised is exactly the inference function that gets exported. The loop never sets a mode
on G, but other code may (a probe, a grid sample restoring a mode), so the objective puts G, R and D
in eval mode at every call rather than trusting the mode they arrive in. D in eval mode also stops
spectral norm's power iteration, which would otherwise move D's u/v buffers at every forward.

``NoiseBatches`` draws (z, labels) for step s from ``rng(seed, NOISE_BATCH_STREAM, s)``: the model's z
distribution and class-balanced labels, a pure function of (seed, step), so a resumed run draws the
same batches with no state of its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilgan.errors import UserError
from distilgan.train.distributed import DistContext
from distilgan.train.losses import FEATURE_WEIGHTS, Objective, Terms, feature_l1
from distilgan.utils.latent import model_classes, model_z_distribution  # what the model was trained on
from distilgan.utils.noise import ZDistribution, balanced_labels, rng
from distilgan.utils.extras import need

# The stream deploy.finetune.input_batch has always drawn fine-tuning z from: with a normal z
# distribution the loop sees the very batches the old fine-tuning loop saw.
NOISE_BATCH_STREAM = 7002
STEPS_PER_EPOCH = 100  # fixed: there is no dataset to make an epoch; sets the grid / checkpoint cadence
FEATURES = ("discriminator", "random", "none")


# -- data ---------------------------------------------------------------------------------------------
class NoiseBatches:
    """BatchSource of ``{"z", "labels"}``: no dataset, a fixed ``steps_per_epoch``, exact on resume."""

    def __init__(self, z_dim: int, classes: list[int], batch_size: int, seed: int,
                 z_distribution: ZDistribution | None = None, steps_per_epoch: int = STEPS_PER_EPOCH,
                 dist: DistContext | None = None) -> None:
        self.dist = dist or DistContext()
        if batch_size < 1 or batch_size % self.dist.world_size:
            raise UserError(f"--batch-size {batch_size} must be >= 1 and divisible by the {self.dist.world_size} processes")
        self.z_dim, self.classes, self.batch_size, self.seed = int(z_dim), list(classes), int(batch_size), int(seed)
        self.z_distribution = z_distribution or ZDistribution()
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.local = self.batch_size // self.dist.world_size

    @classmethod
    def for_model(cls, model: nn.Module, batch_size: int, seed: int, steps_per_epoch: int = STEPS_PER_EPOCH,
                  dist: DistContext | None = None) -> "NoiseBatches":
        return cls(int(model.z_dim), model_classes(model), batch_size, seed, model_z_distribution(model),
                   steps_per_epoch, dist)

    def batch(self, step: int) -> dict[str, Tensor]:
        """The global batch of loop step ``step``, this rank's slice of it, on the device."""
        z = self.z_distribution.sample(rng(self.seed, NOISE_BATCH_STREAM, step), self.batch_size, self.z_dim)
        start = step * self.batch_size  # consecutive label indices: every class equally often
        labels = balanced_labels(start, start + self.batch_size, self.classes)
        mine = slice(self.dist.rank * self.local, (self.dist.rank + 1) * self.local)
        device = self.dist.device
        return {"z": torch.from_numpy(z[mine]).to(device), "labels": torch.from_numpy(labels[mine]).to(device)}

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Tensor]]:
        for index in range(skip, self.steps_per_epoch):
            yield self.batch(epoch * self.steps_per_epoch + index)

    def state_dict(self) -> dict[str, Any]:
        return {}  # the position is (epoch, batch_in_epoch), kept by the trainer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- objective ----------------------------------------------------------------------------------------
def feature_choice(has_discriminator: bool, has_features: bool, feature_weight: float | None) -> tuple[str, float]:
    """(features compared, their weight): the run's D first, else the random net, else none.

    No weight given: 1 with a D (TinyGAN adds its feature term unweighted), else 0 (random features
    are opt-in, as before).
    """
    kind = "discriminator" if has_discriminator else "random" if has_features else "none"
    if feature_weight is None:
        feature_weight = 1.0 if kind == "discriminator" else 0.0
    if feature_weight < 0:
        raise UserError(f"--feature-weight must be >= 0, got {feature_weight}")
    return kind, float(feature_weight)


def describe_loss(features: str, feature_weight: float) -> str:
    """One line naming the fine-tuning loss, for the command's output and the report."""
    if features == "discriminator" and feature_weight > 0:
        return f"pixel L1 + {feature_weight:g} x discriminator feature L1 (the run's D, TinyGAN block weights)"
    if features == "random" and feature_weight > 0:
        return f"pixel L1 + {feature_weight:g} x random-conv feature L1 (no --run: no trained discriminator)"
    return "pixel L1 only" + ("" if features == "discriminator" else " (no --run: no trained discriminator)")


class FinetuneObjective(Objective):
    """Generator-only: match the reference generator's outputs on the same (z, y) (module doc)."""

    trains_discriminator = False

    def __init__(self, generator: nn.Module, reference: nn.Module, discriminator: nn.Module | None = None,
                 features: nn.Module | None = None, feature_weight: float | None = None) -> None:
        self.G, self.reference = generator, reference.eval().requires_grad_(False)
        self.discriminator = discriminator
        if discriminator is not None:
            discriminator.eval().requires_grad_(False)
        # the features compared: the run's D first, else the fixed random net, else none
        self.features = None if discriminator is not None else features
        self.kind, self.feature_weight = feature_choice(discriminator is not None, features is not None, feature_weight)
        # what the Trainer holds as D (saved in its state): the frozen D, or an empty placeholder
        self.D = discriminator if discriminator is not None else nn.Module()
        # what a resumed run must share, taken before any step changes G (RUN/config.yaml's ``extra``):
        # the student's layout (shapes only: pruning / calibration may differ in the last bit between
        # machines), the reference and D by value (they are read from files)
        self._settings = {"features": self.kind, "feature_weight": self.feature_weight,
                          "student": weights_digest(generator, values=False), "reference": weights_digest(reference),
                          "discriminator": weights_digest(discriminator) if discriminator is not None else None}

    def describe(self) -> str:
        return describe_loss(self.kind, self.feature_weight)

    # -- bookkeeping --------------------------------------------------------------------------
    # generators(), state_dict(), generator_update_due(): Objective's defaults (no random numbers of its
    # own: the batches are a function of (seed, step))

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share (recorded in RUN/config.yaml's ``extra``)."""
        return dict(self._settings)

    # -- losses -----------------------------------------------------------------------------------
    def discriminator_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Terms]:
        raise RuntimeError("fine-tuning trains no discriminator (trains_discriminator is False)")

    def _follow_device(self, device: torch.device) -> None:
        """The loop moves G (and D) to its device after this object is built; R and F follow."""
        for module in (self.reference, self.features):
            if module is not None:
                module.to(device)

    def generator_loss(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Terms]:
        z, labels = batch["z"], batch["labels"]
        self._follow_device(z.device)
        self.G.eval()  # BN with running statistics: the exported function (see the module doc)
        self.reference.eval()
        with torch.no_grad():
            target = self.reference(z, labels)
        output = self.G(z, labels)
        terms: Terms = {"g/pixel": F.l1_loss(output.float(), target.float())}
        total = terms["g/pixel"]
        if self.feature_weight > 0 and self.kind == "discriminator":
            self.discriminator.eval()  # no power iteration: D stays exactly the run's D
            _, student_features = self.discriminator(output, labels)
            with torch.no_grad():
                _, reference_features = self.discriminator(target, labels)
            terms["g/feature"] = feature_l1(student_features, reference_features, FEATURE_WEIGHTS)
        elif self.feature_weight > 0 and self.kind == "random":
            with torch.no_grad():
                reference_features = self.features(target)
            terms["g/feature"] = sum((F.l1_loss(a.float(), b.float()) for a, b in
                                      zip(self.features(output), reference_features)), output.new_zeros((), dtype=torch.float32))
        if "g/feature" in terms:
            total = total + self.feature_weight * terms["g/feature"]
        terms["g/total"] = total
        return total, terms


def weights_digest(model: nn.Module, values: bool = True) -> str:
    """16 hex digits of sha256 over a module's state dict: names and shapes, and the values unless told not."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        if values:
            digest.update(tensor.float().contiguous().numpy().tobytes() if tensor.is_floating_point()
                          else tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# -- the discriminator of the run that made the student ---------------------------------------------
def read_run_config(run: str | Path) -> dict[str, Any]:
    """RUN/config.yaml as a plain mapping (any version's keys; only a few are read)."""
    yaml = need("yaml")

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise UserError(f"--run {run}: no distill run there (no config.yaml; give the folder `distilgan distill "
                        "--out` wrote, or leave out --run)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"--run {run}: {path} is not valid YAML (give a distill run folder, or leave out --run)") from None
    if not isinstance(values, Mapping):
        raise UserError(f"--run {run}: {path} is not a distill run config (give a distill run folder)")
    return dict(values)


def discriminator_from_run(run: str | Path, generator: nn.Module) -> nn.Module:
    """The trained DiStyleGANDiscriminator in RUN/state/state.pt, shaped for ``generator``; one-line errors."""
    from distilgan.models import DiStyleGANDiscriminator
    from distilgan.train.state import load_state

    config = read_run_config(run)
    state_path = Path(run) / "state" / "state.pt"
    if not state_path.is_file():
        raise UserError(f"--run {run}: no state/state.pt, where distill saves the discriminator (give the run "
                        "folder itself, not RUN/generator, or leave out --run)")
    weights = load_state(state_path).get("discriminator")
    if not weights:
        raise UserError(f"--run {run}: its state holds no trained discriminator (use the distill run that made "
                        "the student, or leave out --run for the pixel / random-feature loss)")
    options = {key: int(config[key]) for key in ("ndf", "project_dim") if config.get(key) is not None}
    try:
        discriminator = DiStyleGANDiscriminator(num_classes=int(generator.num_classes), resolution=int(generator.resolution),
                                                channels=int(generator.channels), **options)
        discriminator.load_state_dict(weights)
    except (RuntimeError, UserError) as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise UserError(f"--run {run}: its discriminator does not fit this generator ({detail[:200]}; use the "
                        "distill run that trained this student, or leave out --run)") from None
    return discriminator.eval().requires_grad_(False)


def run_metric_reference(run: str | Path) -> str | None:
    """The reference a run's in-loop metrics used: its real data, else its distillation set."""
    config = read_run_config(run)
    return config.get("metric_ref") or config.get("real") or config.get("data") or None
