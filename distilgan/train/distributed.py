"""Processes and devices for the training loop: plain torch.distributed, no DDP wrapper."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from distilgan.errors import UserError


# -- processes and devices ----------------------------------------------------------------------
@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for but no CUDA GPU is available (use --device cpu)")
        return torch.device("cuda", local_rank if name == "cuda" else torch.device(name).index)
    if name != "cpu":
        raise UserError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device("cpu")


def setup_distributed(device_name: str) -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def teardown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _by_dtype(tensors: list[Tensor]) -> list[list[Tensor]]:
    """Group tensors by dtype so that flattening never promotes (e.g. BatchNorm's int64 counter)."""
    groups: dict[torch.dtype, list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.dtype, []).append(tensor)
    return list(groups.values())


def _flat(group: list[Tensor]) -> Tensor:
    """One contiguous 1-D copy of same-dtype tensors (public ops: torch.cat of flattened views)."""
    return torch.cat([t.reshape(-1) for t in group])


def _unflat_into(flat: Tensor, group: list[Tensor]) -> None:
    for tensor, piece in zip(group, flat.split([t.numel() for t in group])):
        tensor.copy_(piece.view_as(tensor))


def all_reduce_mean(tensors: list[Tensor], world_size: int) -> None:
    """Average tensors over ranks, one flat all-reduce per dtype."""
    import torch.distributed as dist

    for group in _by_dtype(tensors):
        flat = _flat(group)
        dist.all_reduce(flat)
        flat /= world_size
        _unflat_into(flat, group)


def broadcast_from_main(tensors: list[Tensor]) -> None:
    import torch.distributed as dist

    for group in _by_dtype(tensors):
        flat = _flat(group)
        dist.broadcast(flat, 0)
        _unflat_into(flat, group)
