"""Stream a distillation set to training: a torch IterableDataset over the store's shards.

How an epoch is split (every sample exactly once across all DDP ranks x DataLoader workers):

1. The shard order is permuted with ``rng(seed, epoch)`` (identical on every rank and worker), and
   the shards' samples are laid end to end in that order: positions 0 .. N-1.
2. Rank r takes the contiguous positions [r*N//W, (r+1)*N//W); inside a rank, worker w of K takes
   the same kind of contiguous slice of the rank's range. So each consumer reads only about
   N/(W*K) samples' worth of shards (a shard cut between two consumers is read by both, each using
   its own part), and ranks get equal counts to within one sample.
3. Each consumer mixes what it reads with a shuffle pool of ``shuffle_buffer`` samples: shard
   pieces are appended, the pool is permuted, and all but half the pool is emitted, so samples from
   neighbouring shards interleave. Memory per consumer: the pool plus the shard just read, at
   most about 2 * (shuffle_buffer + shard_size) samples of H*W*C + 4*z_dim + 8 bytes while they
   are joined (32x32 RGB, z_dim 512, 10,000-sample shards and the default 10,000 pool: ~200 MB
   peak, ~100 MB steady). Without shuffle, one shard at a time.

Ranks may differ by one sample when N is not divisible by W; a DDP loop should stop every rank at
the shortest rank's batch count (``len`` gives the rank's count) to keep collectives matched.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from distilgan.store.reader import DistillationStore
from distilgan.errors import UserError
from distilgan.utils.images import uint8_to_float, nhwc_to_nchw
from distilgan.utils.noise import rng

try:  # torch is a dependency of training; the stream is a torch dataset
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError:  # pragma: no cover - torch is installed with distilgan
    torch = None  # type: ignore[assignment]
    IterableDataset = object  # type: ignore[assignment,misc]

    def get_worker_info() -> Any:  # type: ignore[misc]
        return None


# Samples converted to float tensors at a time: big enough to amortise numpy calls, small enough
# to keep the float copy (4x the uint8 size) small.
CONVERT_BLOCK = 256


# How a UserError raised in a DataLoader worker ends its traceback text (torch re-raises it in the
# main process as UserError("Caught UserError in DataLoader worker process N.\nOriginal Traceback ..."))
_WORKER_MARK = "in DataLoader worker"
_USER_ERROR_LINE = f"{UserError.__module__}.{UserError.__qualname__}: "


def unwrap_worker_error(err: UserError) -> UserError:
    """The one-line UserError a DataLoader worker raised, out of torch's re-raised copy; ``err``
    itself when it did not come from a worker."""
    text = str(err)
    if _WORKER_MARK not in text.split("\n", 1)[0]:
        return err
    lines = [line[len(_USER_ERROR_LINE):] for line in text.splitlines() if line.startswith(_USER_ERROR_LINE)]
    return UserError(lines[-1].strip()) if lines else err


def _slice(start: int, stop: int, part: int, parts: int) -> tuple[int, int]:
    """Contiguous part ``part`` of ``parts`` of [start, stop), sizes differing by at most one."""
    n = stop - start
    return start + part * n // parts, start + (part + 1) * n // parts


class StoreStream(IterableDataset):
    """Yields ``(z float32 (z_dim,), label int64 (), image float32 (C, H, W) in [-1, 1])``.

    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``) for a new order; the
    order is a pure function of (seed, epoch, rank, world_size, DataLoader worker count).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 10_000,
        verify: bool | None = None,
    ) -> None:
        """``verify``: check each shard's sha256 when first read (None: the process default, on)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.store = DistillationStore.open(root, verify=verify)
        self.root = str(root)
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, int(seed), int(rank), int(world_size)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.epoch = 0
        self.skip_per_worker = 0  # samples each worker passes over, unconverted, at the start of the epoch

    def set_epoch(self, epoch: int, skip_per_worker: int = 0) -> None:
        """The epoch to yield; ``skip_per_worker``: samples each worker leaves out at its start (a
        resumed epoch's done part: see :meth:`plan_skip`), neither converted nor sent."""
        self.epoch, self.skip_per_worker = int(epoch), int(skip_per_worker)

    def plan_skip(self, batches: int, batch_size: int, num_workers: int) -> tuple[int, int]:
        """How to start ``batches`` batches of ``batch_size`` into this epoch's loader order:
        ``(skip_per_worker, skip_after)``. The workers skip whole rounds of full batches (one from each
        worker, so the DataLoader's round-robin delivers the rest exactly as before); the consumer
        drops the remaining ``skip_after`` samples (less than one round)."""
        workers = max(1, num_workers)
        counts = [len(self.sample_order(w, workers)) for w in range(workers)] if num_workers else [len(self)]
        rounds = min(batches // workers, min(counts) // batch_size)
        return rounds * batch_size, (batches - rounds * workers) * batch_size

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all of its DataLoader workers together)."""
        start, stop = _slice(0, self.store.num_samples, self.rank, self.world_size)
        return stop - start

    # -- which samples this consumer reads --------------------------------------------------------

    def shard_order(self) -> list[int]:
        order = np.arange(self.store.num_shards)
        if self.shuffle:
            order = rng(self.seed, self.epoch).permutation(order)
        return [int(i) for i in order]

    def pieces(self, worker: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """(shard index, first, stop) rows of each shard that this rank's ``worker`` reads, in order."""
        start, stop = _slice(0, self.store.num_samples, self.rank, self.world_size)
        start, stop = _slice(start, stop, worker, num_workers)
        counts = self.store.shard_counts()
        pieces, position = [], 0
        for shard in self.shard_order():
            lo, hi = max(start, position), min(stop, position + counts[shard])
            if lo < hi:
                pieces.append((shard, lo - position, hi - position))
            position += counts[shard]
        return pieces

    def sample_order(self, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """The global sample indices (shards laid end to end in index order) that ``__iter__`` yields
        for this rank's ``worker``, in the same order: the same pool logic, on indices instead of data."""
        offsets = np.concatenate([[0], np.cumsum(self.store.shard_counts())])
        pieces = [np.arange(offsets[shard] + lo, offsets[shard] + hi) for shard, lo, hi in self.pieces(worker, num_workers)]
        if not self.shuffle:
            return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        gen = rng(self.seed, self.epoch, self.rank, worker, num_workers)
        out: list[np.ndarray] = []
        pool = np.zeros(0, np.int64)
        for piece in pieces:
            pool = np.concatenate([pool, piece])
            if len(pool) >= self.shuffle_buffer:
                perm = gen.permutation(len(pool))
                keep = self.shuffle_buffer // 2
                out.append(pool[perm[: len(perm) - keep]])
                pool = pool[perm[len(perm) - keep :]]
        if len(pool):
            out.append(pool[gen.permutation(len(pool))])
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def loader_order(self, batch_size: int, num_workers: int) -> np.ndarray:
        """The order a ``DataLoader(self, batch_size, num_workers)`` delivers samples in: each worker's
        batches (its last one partial), taken round-robin over the workers still running."""
        if num_workers == 0:
            return self.sample_order(0, 1)
        per_worker = [self.sample_order(w, num_workers) for w in range(num_workers)]
        batches = [[order[i : i + batch_size] for i in range(0, len(order), batch_size)] for order in per_worker]
        out = [b for round_ in range(max(len(b) for b in batches)) for b in
               (worker[round_] for worker in batches if round_ < len(worker))]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    # -- iteration --------------------------------------------------------------------------------

    def _emit(self, arrays: list[np.ndarray], index: np.ndarray | None = None) -> Iterator[tuple[Any, Any, Any]]:
        """Yield samples ``index`` (default: all, in order) of (z, labels, images), block by block,
        after the epoch's first ``skip_per_worker`` (not converted)."""
        if index is None:
            index = np.arange(len(arrays[1]))
        if self._skip_left:
            dropped = min(self._skip_left, len(index))
            index, self._skip_left = index[dropped:], self._skip_left - dropped
        count = len(index)
        for a in range(0, count, CONVERT_BLOCK):
            rows = index[a : a + CONVERT_BLOCK]
            z, labels, images = (array[rows] for array in arrays)
            z_t = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
            y_t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
            x_t = torch.from_numpy(uint8_to_float(nhwc_to_nchw(images)))
            for i in range(len(y_t)):
                yield z_t[i], y_t[i], x_t[i]

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        pieces = self.pieces(worker, num_workers)
        self._skip_left = self.skip_per_worker
        if not self.shuffle:
            for shard, lo, hi in pieces:
                if self._skip_left >= hi - lo:  # a shard wholly inside the skipped part is not read
                    self._skip_left -= hi - lo
                    continue
                z, labels, images = self.store.read_shard(shard)
                yield from self._emit([z[lo:hi], labels[lo:hi], images[lo:hi]])
            return
        gen = rng(self.seed, self.epoch, self.rank, worker, num_workers)
        pool: list[np.ndarray] = []
        for shard, lo, hi in pieces:
            z, labels, images = self.store.read_shard(shard)
            piece = [z[lo:hi], labels[lo:hi], images[lo:hi]]
            pool = piece if not pool else [np.concatenate([p, q]) for p, q in zip(pool, piece)]
            del z, labels, images, piece  # only the pool stays alive until the next read
            if len(pool[1]) >= self.shuffle_buffer:
                perm = gen.permutation(len(pool[1]))
                keep = self.shuffle_buffer // 2  # carried over so the next shard mixes with this one
                yield from self._emit(pool, perm[: len(perm) - keep])
                pool = [p[perm[len(perm) - keep :]] for p in pool]
        if pool and len(pool[1]):
            yield from self._emit(pool, gen.permutation(len(pool[1])))
