"""CIFAR ResNet-20/32/44/56 (He et al. 2016, section 4.2) with the parameter-free option-A shortcut.

Three stages of ``n = (depth - 2) / 6`` basic blocks at 16, 32 and 64 channels. When a block halves
the resolution and doubles the channels, the shortcut subsamples by 2 and zero-pads the new
channels (option A), so the network has no projection weights. Layer names match the widely
used CIFAR ResNet checkpoints (``conv1, bn1, layer{1,2,3}.{i}.conv{1,2}/bn{1,2}, linear``), so
those files load after stripping their ``module.`` prefix — see :func:`load_cifar_resnet_file`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distilgan.errors import UserError
from distilgan.models.pretrained import register_to_config
from distilgan.models.classifiers.base import DEFAULT_MEAN, DEFAULT_STD, Classifier


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = stride != 1 or c_in != c_out
        self.pad = (c_out - c_in) // 2

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.downsample:
            return x
        # option A: take every other pixel, zero-pad the channel dimension on both sides
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    @register_to_config
    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        resolution: int = 32,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, resolution, mean, std, class_names)
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, self.num_classes)
        for module in self.modules():  # Kaiming init as in the paper
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def load_cifar_resnet_file(
    path: str | os.PathLike, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> CifarResNet:
    """A CIFAR ResNet from a ``.th`` file of the common CIFAR ResNet training script.

    Those files are torch pickles ``{'state_dict', 'best_prec1'}`` saved from a CUDA DataParallel
    model. ``weights_only=True`` (no arbitrary code) with ``map_location='cpu'`` reads them, so no
    unsafe unpickling is needed. The depth follows from the number of blocks in the state dict;
    ``mean``/``std`` are the statistics those models were trained with.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"classifier weights not found: {path} (give a checkpoint folder or a CIFAR ResNet .th file)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of many kinds
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise UserError(f"{path} is not a loadable torch weights file ({detail})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path} holds no state_dict (expected a CIFAR ResNet checkpoint)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    blocks = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    if "linear.weight" not in state or blocks == 0:
        raise UserError(f"{path} is not a CIFAR ResNet checkpoint (no layer1.* / linear.* weights)")
    model = CifarResNet(depth=6 * blocks + 2, num_classes=int(state["linear.weight"].shape[0]), mean=mean, std=std)
    own = model.state_dict()
    # these files predate BatchNorm's num_batches_tracked counters; keep ours (unused in eval)
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        raise UserError(f"{path} does not match a CIFAR ResNet-{6 * blocks + 2} (missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(state, strict=False)
    model.metadata = {"source_file": path.name, "best_prec1": float(blob.get("best_prec1", float("nan")))}
    return model.eval()
