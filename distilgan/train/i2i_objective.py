"""Image-to-image distillation: a translator learns a teacher's edit from (source, edited) pairs.

The teacher's edit (a class change with the same z, ``distilgan pairs``) gives the answer for every
source image, so the objective is pix2pix's (paired L1 + a conditional PatchGAN) with pix2pixHD's
discriminator feature matching, hinge form as in the rest of distilgan:

    G: lambda_l1 |G(x,e) - y|  +  lambda_feature mean_i |D_i(x, G(x,e), e) - D_i(x, y, e)|
       + lambda_gan * hinge_G(D(x, G(x,e), e))
    D: hinge(D(x, y, e) real, D(x, G(x,e), e) fake)

x the source image, y the teacher's edited image, e the edit. D sees the source beside the image it
judges (pix2pix's conditional D), so it can refuse an output that does not belong to its input.
The teacher images' D features for the G step come from D before its update, as in the black-box
distillation objective (losses.py), which also saves a D pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilgan.train.losses import Objective, Terms, feature_l1, hinge_d_fake, hinge_d_real, hinge_g


class I2IObjective(Objective):
    """pix2pix + feature matching on teacher pairs (module doc); no random numbers of its own."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, lambda_l1: float = 100.0,
                 lambda_feature: float = 10.0, lambda_gan: float = 1.0) -> None:
        self.G, self.D = generator, discriminator
        self.lambda_l1, self.lambda_feature, self.lambda_gan = lambda_l1, lambda_feature, lambda_gan
        self._teacher_features: tuple[Tensor, list[Tensor]] | None = None

    def _feature_weights(self, count: int) -> tuple[float, ...]:
        return (1.0 / count,) * count  # pix2pixHD: every D layer alike

    def discriminator_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Terms]:
        sources, targets, edits = batch["sources"], batch["targets"], batch["edits"]
        n = sources.shape[0]
        with torch.no_grad():
            fakes = self.G(sources, edits)
        # one D forward for both halves (one spectral-norm update per step)
        logits, features = self.D(torch.cat([sources, sources]), torch.cat([targets, fakes.to(targets.dtype)]).detach(),
                                  torch.cat([edits, edits]))
        self._teacher_features = (targets, [f[:n].detach() for f in features])
        terms: Terms = {"d/real": hinge_d_real(logits[:n]), "d/fake": hinge_d_fake(logits[n:])}
        terms["d/total"] = terms["d/real"] + terms["d/fake"]
        return terms["d/total"], terms

    def generator_loss(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Terms]:
        sources, targets, edits = batch["sources"], batch["targets"], batch["edits"]
        outputs = self.G(sources, edits)
        terms: Terms = {"g/l1": F.l1_loss(outputs.float(), targets.float())}
        total = self.lambda_l1 * terms["g/l1"]
        if self.lambda_feature > 0 or self.lambda_gan > 0:
            logits, student_features = self.D(sources, outputs, edits)
            stash, self._teacher_features = self._teacher_features, None
            if stash is not None and stash[0] is targets:
                teacher_features = stash[1]
            else:  # a G loss without this step's D loss (tests): D as it is now
                with torch.no_grad():
                    _, teacher_features = self.D(sources, targets, edits)
            terms["g/feature"] = feature_l1(student_features, teacher_features,
                                            self._feature_weights(len(student_features)))
            terms["g/gan"] = hinge_g(logits)
            total = total + self.lambda_feature * terms["g/feature"] + self.lambda_gan * terms["g/gan"]
        terms["g/total"] = total
        return total, terms
