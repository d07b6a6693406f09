"""GAN inversion: find the z for which a class-conditional teacher draws a given image.

The slow path that an image-to-image student replaces (issue 18): for images x of class y,

    z* = argmin_z  |T(z, y) - x|^2  +  w_f * F(T(z, y), x)  +  w_p * (mean(z^2) - 1)^2

by Adam for ``steps`` steps on the whole batch at once (each image its own z), keeping each image's
best z. F is a perceptual distance on a CIFAR classifier's features (LPIPS's recipe: each stage's
activations unit-normalised over channels, squared differences averaged; our VGG-11 classifier
stands in for LPIPS's ImageNet VGG, which cannot be downloaded here), w_p keeps z on the prior's shell.
The start is the encoder's z (``distilgan train-encoder``: in-domain inversion's encoder-then-
optimise) or, without one, the best of ``starts`` random draws. Then T(z*, y') is the edit to y'.

Everything is a pure function of (images, labels, settings, seed): rerunning a batch gives the
same z, which the resumable command relies on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from distilgan.errors import UserError
from distilgan.utils.noise import rng

START_STREAM = 0x1A7E  # the random starts of a batch


@dataclass
class InversionSettings:
    steps: int = 200
    lr: float = 0.05
    feature_weight: float = 1.0
    prior_weight: float = 1e-3
    starts: int = 8

    def check(self) -> None:
        if self.steps < 0 or self.starts < 1:
            raise UserError("--steps must be >= 0 and --starts >= 1")
        if not self.lr > 0 or self.feature_weight < 0 or self.prior_weight < 0:
            raise UserError("--lr must be > 0, --feature-weight and --prior-weight >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PerceptualDistance(nn.Module):
    """Per-image distance between classifier features at the end of every stage (module doc)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        stack = getattr(classifier, "features", None)
        if not isinstance(stack, nn.Sequential):
            raise UserError("--feature-net must be a VGG-style classifier with a `features` stack (e.g. "
                            "cifar10-vgg11_bn_x0_25), or none")
        self.classifier = classifier.eval().requires_grad_(False)
        self.stages = stack

    def features(self, images: Tensor) -> list[Tensor]:
        x, out = self.classifier.normalize(images), []
        for layer in self.stages:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                out.append(x)
        if not isinstance(self.stages[-1], nn.MaxPool2d):
            out.append(x)  # a stack that does not end in a pool: its last stage counts too (once)
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8) for f in out]

    def forward(self, a: Tensor, b_features: list[Tensor]) -> Tensor:
        return torch.stack([(fa - fb).pow(2).sum(1).mean((1, 2))
                            for fa, fb in zip(self.features(a), b_features)]).mean(0)


def freeze_teacher(teacher: Any) -> None:
    """No weight gradients: only z is optimised (a third less work per backward)."""
    for name in ("fn", "G"):
        module = getattr(teacher, name, None)
        if isinstance(module, nn.Module):
            for parameter in module.parameters():  # (a ScriptModule has no requires_grad_)
                parameter.requires_grad_(False)


def _losses(teacher: Any, z: Tensor, labels: Tensor, images: Tensor, target_features: list[Tensor] | None,
            distance: PerceptualDistance | None, settings: InversionSettings) -> Tensor:
    """Per-image objective (N,); through autograd only when z asks for it (scoring needs no gradients, so
    any teacher, ONNX included, can score the encoder's z)."""
    if z.requires_grad or settings.steps > 0:  # one function for every score of an optimisation
        drawn = teacher.torch_generate(z, labels).float()
    else:
        drawn = torch.from_numpy(teacher.generate(z.detach().cpu().numpy().astype(np.float32),
                                                  labels.cpu().numpy())).to(images.device)
    loss = (drawn - images).pow(2).mean((1, 2, 3))
    if distance is not None and settings.feature_weight > 0:
        loss = loss + settings.feature_weight * distance(drawn, target_features)
    # a normal z in d dimensions lies near |z|^2 = d: keep mean(z^2) near 1 (pulling it to 0 would favour
    # the atypical, low-norm z near the mode)
    return loss + settings.prior_weight * (z.pow(2).mean(1) - 1.0).pow(2)


def invert(teacher: Any, images: Tensor, labels: Tensor, settings: InversionSettings, *, seed: int = 0,
           encoder: nn.Module | None = None, distance: PerceptualDistance | None = None,
           z_sampler: Callable[[np.random.Generator, int], np.ndarray] | None = None,
           step_callback: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(z* float32 (N, z_dim), final per-image loss (N,)) for float NCHW ``images`` in [-1, 1] of ``labels``."""
    settings.check()
    freeze_teacher(teacher)
    device = torch.device(getattr(teacher, "device", "cpu") or "cpu")
    images, labels, n = images.float().to(device), labels.to(device), images.shape[0]
    with torch.no_grad():
        target_features = [f.detach() for f in distance.features(images)] if distance is not None else None
        if encoder is not None:
            z = encoder.eval()(images, labels).float()
        else:
            draw = z_sampler or (lambda g, count: g.standard_normal((count, teacher.z_dim)).astype(np.float32))
            candidates = torch.from_numpy(draw(rng(seed, START_STREAM), n * settings.starts)).to(device)
            candidates = candidates.view(settings.starts, n, -1)
            scores = torch.stack([_losses(teacher, c, labels, images, target_features, distance, settings)
                                  for c in candidates])
            z = candidates[scores.argmin(0), torch.arange(n, device=device)]
    z = z.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=settings.lr)
    best_z, best_loss = z.detach().clone(), torch.full((n,), float("inf"), device=device)
    for step in range(settings.steps + 1):  # the last pass only scores the final z
        with torch.set_grad_enabled(step < settings.steps):
            loss = _losses(teacher, z if step < settings.steps else z.detach(), labels, images, target_features,
                           distance, settings)
        better = loss.detach() < best_loss  # NaN never counts as better: a diverged z keeps its best
        best_loss = torch.where(better, loss.detach(), best_loss)
        best_z[better] = z.detach()[better]
        if step == settings.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # each image's z only sees its own loss
        optimizer.step()
        if step_callback is not None:
            step_callback(step + 1)
    return best_z.cpu().numpy().astype(np.float32), best_loss.cpu().numpy()
