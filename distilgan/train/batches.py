"""Where training batches come from: a distillation set (streamed), real images, or both."""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import numpy as np
import torch
from torch import Tensor

from distilgan.errors import UserError
from distilgan.train.distributed import DistContext
from distilgan.utils.images import nhwc_to_nchw, uint8_to_float
from distilgan.utils.noise import rng

REAL_STREAM = 0x4EA1  # seeds the real-data order


# -- data ---------------------------------------------------------------------------------------
class BatchSource(Protocol):
    steps_per_epoch: int

    def batches(self, epoch: int, skip: int) -> Iterator[dict[str, Tensor]]:
        """This rank's batches of ``epoch``, leaving out the first ``skip`` (resume mid-epoch)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RealSampler:
    """Real images in a fixed random order per pass; a global batch is cut into one slice per rank.

    The position (pass, cursor) is the whole state, so a resumed run draws the same images.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, dist: DistContext) -> None:
        if len(images) < batch_size:
            raise UserError(f"the real dataset has {len(images)} images, fewer than one batch of {batch_size} "
                            "(lower --batch-size)")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.batch_size, self.seed, self.dist = batch_size, seed, dist
        self.local = batch_size // dist.world_size
        self.load_state_dict({"pass": 0, "cursor": 0})

    def next_batch(self) -> dict[str, Tensor]:
        if self.cursor + self.batch_size > len(self.images):
            self.load_state_dict({"pass": self.passes + 1, "cursor": 0})
        chosen = self.order[self.cursor : self.cursor + self.batch_size]
        chosen = chosen[self.dist.rank * self.local : (self.dist.rank + 1) * self.local]
        self.cursor += self.batch_size
        device = self.dist.device
        images = torch.from_numpy(uint8_to_float(nhwc_to_nchw(self.images[chosen])))
        return {"real_images": images.to(device), "real_labels": torch.from_numpy(self.labels[chosen]).to(device)}

    def state_dict(self) -> dict[str, Any]:
        return {"pass": self.passes, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self.cursor = int(state["pass"]), int(state["cursor"])
        self.order = rng(self.seed, REAL_STREAM, self.passes).permutation(len(self.images))


def _rechunk(loader: Any, size: int, drop: int = 0) -> Iterator[tuple[Tensor, ...]]:
    """Exact ``size`` batches from pieces of any size (workers each end on a partial batch), after
    dropping the first ``drop`` samples."""
    pending: list[tuple[Tensor, ...]] = []
    count = 0
    for piece in loader:
        if drop:
            cut = min(drop, len(piece[0]))
            piece, drop = [part[cut:] for part in piece], drop - cut
            if not len(piece[0]):
                continue
        pending.append(tuple(piece))
        count += len(piece[0])
        while count >= size:
            merged = tuple(torch.cat(parts) for parts in zip(*pending))
            yield tuple(part[:size] for part in merged)
            pending = [tuple(part[size:] for part in merged)]
            count -= size


# A store up to this size is read once into memory (uint8) and batched by index; larger ones stream.
IN_MEMORY_LIMIT_BYTES = 4 << 30


def store_bytes(store: Any) -> int:
    per_sample = store.resolution**2 * store.channels + 4 * store.z_dim + 8
    return int(store.num_samples) * per_sample


def _worker_context(workers: int) -> Any:
    """Start DataLoader workers from a fork server, not by forking this process: after OpenVINO (the
    in-loop metrics' Inception) or oneDNN have started thread pools, fork() in the trainer itself can
    crash (TBB's fork handlers). The fork server is a fresh process; workers fork from it."""
    import multiprocessing

    if workers > 0 and "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return None


def _wait_for_all_workers(barrier: Any, worker_id: int) -> None:
    """``worker_init_fn``: no worker reads a shard before every worker has started. A worker whose
    shard is bad would otherwise end the run while another is still unpickling its queues in the fork
    server; their semaphores are gone with the parent and that worker prints a traceback."""
    import threading

    try:
        barrier.wait(timeout=600)
    except threading.BrokenBarrierError:  # a worker died starting: torch reports it
        pass


def _worker_start(workers: int) -> dict[str, Any]:
    """DataLoader arguments starting ``workers`` worker processes safely (none when 0)."""
    import functools

    context = _worker_context(workers)
    if context is None:
        return {}
    return {"multiprocessing_context": context,
            "worker_init_fn": functools.partial(_wait_for_all_workers, context.Barrier(workers))}


class StoreBatches:
    """Distillation batches (z, labels, teacher_images) from a store, plus real ones if given.

    A store that fits in memory (``in_memory`` None: up to 4 GiB; a CIFAR-sized 50,000-sample set is
    ~180 MB) is read once as uint8 and each batch is gathered by index, in exactly the order the
    streaming path (StoreStream through a DataLoader with ``workers`` workers) delivers: no worker
    processes competing for the cores, no per-sample collate, no loader rebuilt every epoch.

    Both paths check each shard's sha256 against the manifest when it is first read (``verify``;
    None: the process default, see ``distilgan.store.reader.set_shard_checks``): the in-memory one once, as it
    loads; the streaming one in the DataLoader workers, every epoch until a single-process run has
    streamed a whole epoch (each worker is a fresh process, so it cannot keep what it checked).
    """

    def __init__(self, store_dir: str, batch_size: int, seed: int, dist: DistContext, workers: int = 0,
                 real: RealSampler | None = None, in_memory: bool | None = None, verify: bool | None = None) -> None:
        from distilgan.store import DistillationStore

        if batch_size % dist.world_size:
            raise UserError(f"--batch-size {batch_size} must be divisible by the {dist.world_size} processes")
        self.store = DistillationStore.open(store_dir, verify=verify)
        self.verify = self.store.verify
        self.store_dir, self.seed, self.dist, self.workers, self.real = store_dir, seed, dist, workers, real
        self.local = batch_size // dist.world_size
        self.steps_per_epoch = (self.store.num_samples // dist.world_size) // self.local
        if self.steps_per_epoch == 0:
            raise UserError(f"the store has {self.store.num_samples} samples, fewer than one batch of {batch_size} "
                            "(lower --batch-size)")
        self.in_memory = store_bytes(self.store) <= IN_MEMORY_LIMIT_BYTES if in_memory is None else bool(in_memory)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if self.in_memory:  # read (and check) now: a bad shard fails before training starts
            self._arrays = self.store.load_all()
        self._all_checked = False  # every shard passed its check in this process's workers

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole store in memory, (z, labels, uint8 NHWC images), read (and checked) once."""
        if self._arrays is None:
            self._arrays = self.store.load_all()
        return self._arrays

    def _memory_batches(self, epoch: int, skip: int) -> Iterator[dict[str, Tensor]]:
        from distilgan.store.stream import StoreStream

        z_all, labels_all, images_all = self.arrays()
        stream = StoreStream(self.store_dir, shuffle=True, seed=self.seed, rank=self.dist.rank,
                             world_size=self.dist.world_size)
        stream.set_epoch(epoch)
        order = stream.loader_order(self.local, self.workers)
        device = self.dist.device
        for index in range(skip, self.steps_per_epoch):
            chosen = order[index * self.local : (index + 1) * self.local]
            batch = {"z": torch.from_numpy(z_all[chosen]).to(device),
                     "labels": torch.from_numpy(labels_all[chosen].astype(np.int64)).to(device),
                     "teacher_images": torch.from_numpy(uint8_to_float(nhwc_to_nchw(images_all[chosen]))).to(device)}
            if self.real is not None:
                batch.update(self.real.next_batch())
            yield batch

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Tensor]]:
        if self.in_memory:
            yield from self._memory_batches(epoch, skip)
            return
        from torch.utils.data import DataLoader

        from distilgan.store.stream import StoreStream, unwrap_worker_error

        stream = StoreStream(self.store_dir, shuffle=True, seed=self.seed, rank=self.dist.rank,
                             world_size=self.dist.world_size, verify=self.verify and not self._all_checked)
        # a resumed epoch: the workers pass over whole rounds of done batches unconverted, the rest
        # (under one round) is dropped here; nothing of it is yielded
        skip_per_worker, skip_after = stream.plan_skip(skip, self.local, self.workers) if skip else (0, 0)
        stream.set_epoch(epoch, skip_per_worker)
        cuda = self.dist.device.type == "cuda"
        loader = DataLoader(stream, batch_size=self.local, num_workers=self.workers, pin_memory=cuda,
                            persistent_workers=False, **_worker_start(self.workers))
        pieces = _rechunk(loader, self.local, drop=skip_after)
        for index in range(self.steps_per_epoch + 1):
            try:
                z, labels, images = next(pieces)
            except StopIteration:
                # the loader ran dry: its workers read (and so checked) every shard of this rank; with
                # one process that is every shard, and the next epochs need not hash them again
                if self.dist.world_size == 1 and not skip:  # a resumed epoch may leave shards unread
                    self._all_checked = True
                return
            except UserError as err:  # a worker's error, re-raised by torch with its traceback inside
                raise unwrap_worker_error(err) from None
            if index + skip >= self.steps_per_epoch:
                break
            device = self.dist.device
            batch = {"z": z.to(device, non_blocking=cuda), "labels": labels.to(device, non_blocking=cuda),
                     "teacher_images": images.to(device, non_blocking=cuda)}
            if self.real is not None:
                batch.update(self.real.next_batch())
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"real": self.real.state_dict() if self.real is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.real is not None and state.get("real") is not None:
            self.real.load_state_dict(state["real"])


class RealBatches:
    """Real-data-only batches (a GAN trained on a dataset, e.g. the teacher): one pass per epoch.

    The order of epoch e is a permutation drawn from (seed, e), so resuming mid-epoch only skips
    batches; ``mirror`` flips a random half of the images left-right (BigGAN's mirror_augment),
    also drawn from (seed, e). Each rank takes its slice of every global batch.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, dist: DistContext,
                 mirror: bool = False) -> None:
        if batch_size % dist.world_size:
            raise UserError(f"--batch-size {batch_size} must be divisible by the {dist.world_size} processes")
        if len(images) < batch_size:
            raise UserError(f"the dataset has {len(images)} images, fewer than one batch of {batch_size} "
                            "(lower --batch-size)")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.batch_size, self.seed, self.dist, self.mirror = batch_size, seed, dist, mirror
        self.local = batch_size // dist.world_size
        self.steps_per_epoch = len(images) // batch_size

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Tensor]]:
        gen = rng(self.seed, REAL_STREAM, epoch)
        order = gen.permutation(len(self.images))
        flips = gen.random(len(self.images)) < 0.5
        device = self.dist.device
        for index in range(skip, self.steps_per_epoch):
            start = index * self.batch_size + self.dist.rank * self.local
            chosen = order[start : start + self.local]
            images = self.images[chosen]
            if self.mirror:
                images = np.where(flips[chosen, None, None, None], images[:, :, ::-1], images)
            pixels = torch.from_numpy(uint8_to_float(nhwc_to_nchw(images)))
            yield {"real_images": pixels.to(device, non_blocking=True),
                   "real_labels": torch.from_numpy(self.labels[chosen]).to(device, non_blocking=True)}

    def state_dict(self) -> dict[str, Any]:
        return {}  # the position is (epoch, batch_in_epoch), kept by the trainer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
