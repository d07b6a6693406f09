"""Multiply-accumulate (MAC) and parameter counts of a model, measured by forward hooks.

What is counted: one MAC per weight multiply in ``nn.Conv2d``, ``nn.ConvTranspose2d`` and
``nn.Linear`` (so a conv output element costs ``in_channels / groups * kh * kw`` MACs). What is
excluded, as usual for GAN size tables: bias adds, batch norm, activations (GLU, tanh, LeakyReLU),
nearest upsampling, concatenation, and spectral norm's power iteration (training only). Hooks see
the shapes the model really runs at, so the count follows any resolution or width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

EXCLUDED = "bias adds, batch norm, activations, upsampling, concatenation, spectral-norm power iteration"


@dataclass
class LayerCount:
    name: str
    kind: str
    macs: int  # per image
    params: int


@dataclass
class ModelCount:
    macs_per_image: int
    params: int
    layers: list[LayerCount] = field(default_factory=list)
    excluded: str = EXCLUDED

    def as_dict(self) -> dict[str, Any]:
        return {
            "macs_per_image": self.macs_per_image,
            "params": self.params,
            "excluded_from_macs": self.excluded,
            "layers": [vars(layer) for layer in self.layers],
        }


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Learned parameters (spectral norm's u/v vectors and BN running stats are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    batch = output.shape[0]
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() // batch * per_output
    if isinstance(module, nn.ConvTranspose2d):
        # each input element is scattered to out_channels/groups * kh * kw outputs
        per_input = (module.out_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return inputs[0].numel() // batch * per_input
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


def example_inputs(model: nn.Module, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shape for the model's forward: a generator (z, labels), an image
    translator (images, edits), a pair critic (inputs, outputs, edits), a classifier (images), a
    latent encoder or a class-conditional discriminator (images, labels)."""
    # imported here, not at the top: the model modules stay free to use macs without an import cycle
    from distilgan.models.classifiers.base import Classifier
    from distilgan.models.encoder import LatentEncoder
    from distilgan.models.translator import PatchDiscriminator

    device = next(model.parameters()).device
    labels = torch.zeros(batch, dtype=torch.long, device=device)  # label, edit: index 0 fits every model
    if hasattr(model, "z_dim") and not isinstance(model, LatentEncoder):  # the encoder maps *into* z
        return torch.zeros(batch, model.z_dim, device=device), labels
    images = torch.zeros(batch, model.channels, model.resolution, model.resolution, device=device)
    if isinstance(model, PatchDiscriminator):  # judges an (input, output) pair
        return images, images, labels
    if isinstance(model, Classifier):
        return (images,)
    return images, labels


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> ModelCount:
    """Run one forward pass (eval mode, no grad) and add up the MACs of every counted layer."""
    if not inputs:
        inputs = example_inputs(model)
    layers: list[LayerCount] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):

            def hook(mod: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
                layers.append(
                    LayerCount(name, type(mod).__name__, _layer_macs(mod, args, out), count_parameters(mod))
                )

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()  # BN in eval mode works for batch 1 and leaves running stats untouched
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ModelCount(sum(layer.macs for layer in layers), count_parameters(model), layers)


def format_count(value: float) -> str:
    """2054368 -> '2.05 M', 115392512 -> '115.4 M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            scaled = value / scale
            return f"{scaled:.3g} {unit}" if scaled < 100 else f"{scaled:.1f} {unit}"
    return str(int(value))
