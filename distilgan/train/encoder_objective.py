"""Training a latent encoder on a distillation set, inside the one training loop.

    E: |E(x, y) - z|^2     (x = T(z, y), the teacher's image in the set; mean over z's dimensions)

No discriminator (``trains_discriminator = False``; the loop holds an empty module in its place)
and no gradient of the teacher: regression on the teacher's own samples. An image T(E(x), y) is
then the teacher's answer to "which of your images is this?", close to x in what the teacher can
draw; ``distilgan invert`` refines it by optimisation when it must be closer.

The grid shows x beside T(E(x), y) for a fixed set of the store's images when the teacher can be
loaded (its spec is in the store's manifest), else x alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilgan.errors import UserError
from distilgan.train.inputs import BN_STREAM
from distilgan.train.losses import Objective, Terms
from distilgan.utils.noise import rng

GRID_IMAGES = 40  # 4 rows of 10 (image, reconstruction) pairs


class EncoderObjective(Objective):
    """Latent regression (module doc); ``D`` is the empty module the loop holds in D's place."""

    trains_discriminator = False

    def __init__(self, encoder: nn.Module) -> None:
        self.G, self.D = encoder, nn.Module()

    def discriminator_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Terms]:
        raise RuntimeError("the encoder trains no discriminator (trains_discriminator is False)")

    def generator_loss(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Terms]:
        z = self.G(batch["teacher_images"], batch["labels"])
        terms: Terms = {"g/latent": F.mse_loss(z.float(), batch["z"].float())}
        terms["g/total"] = terms["g/latent"]
        return terms["g/total"], terms


class EncoderInputs:
    """The loop's ModelInputs for an encoder: store images for the BN re-estimation and the grid."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int, teacher: Any = None) -> None:
        self.images, self.labels, self.seed, self.teacher = images, np.asarray(labels, np.int64), int(seed), teacher
        self.grid_nrow = 20 if teacher is not None else 10

    def bn_inputs(self, i: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        from distilgan.train.i2i_data import to_float

        chosen = rng(self.seed, BN_STREAM, i).choice(len(self.images), size=batch, replace=len(self.images) < batch)
        return to_float(self.images[chosen], device), torch.from_numpy(self.labels[chosen]).to(device)

    def grid_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        count = min(GRID_IMAGES, len(self.images))
        return self.images[:count], self.labels[:count]

    def grid_images(self, model: nn.Module, device: torch.device) -> np.ndarray:
        from distilgan.train.i2i_data import to_float

        images, labels = self.grid_inputs()
        inputs = to_float(images, device).float()
        if self.teacher is None:
            return inputs.cpu().numpy()
        z = model(inputs, torch.from_numpy(labels).to(device)).float().cpu().numpy()
        try:
            rebuilt = torch.from_numpy(np.asarray(self.teacher.generate(z, labels), np.float32))
        except UserError as err:  # a picture must not end the run: show the inputs alone from now on
            print(f"train-encoder: the grid shows the inputs alone: the teacher failed on the encoder's z ({err})")
            self.teacher, self.grid_nrow = None, 10
            return inputs.cpu().numpy()
        return torch.stack([inputs.cpu(), rebuilt], dim=1).flatten(0, 1).numpy()

    def probe_loss(self, G: nn.Module, D: nn.Module | None, device: torch.device, batch: int) -> Any:
        images, labels = self.bn_inputs(0, batch, device)
        return lambda G_, D_: G_(images, labels).float().pow(2).mean()
