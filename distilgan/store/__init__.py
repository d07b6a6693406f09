"""The distillation set: a teacher's (z, label, image) samples as checksummed npz shards + a manifest.

One module a job, in the order data flows (the format in docs/store.md):

* ``format``: file names, byte-stable npz shards, the class list, the shard plan, the manifest;
* ``writer``: ``write_store`` samples a teacher into a set, resumable shard by shard;
* ``distributed``: the same under torchrun, shards dealt out over the ranks, the same bytes;
* ``reader``: ``verify_store`` and ``DistillationStore``, array access with each shard's sha256 checked;
* ``stream``: ``StoreStream``, an IterableDataset for sets too large for memory;
* ``pairs`` (writer in ``pairs_writer``): edit pair sets, (G(z, source), G(z, target)) for image-to-image
  students: ``write_pairs``, ``PairStore``, ``verify_pairs``, ``parse_edits``.

Real datasets (CIFAR-10, image folders) are not stores: they live in ``distilgan.data``.
"""

from __future__ import annotations

from distilgan.store.format import (
    ENTRY_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    class_counts,
    clear_entries,
    load_manifest,
    plan_shards,
    read_entries,
    read_npz,
    resolve_classes,
    shard_name,
    write_npz,
)
from distilgan.store.pairs import PAIRS_FORMAT, PairStore, load_pairs_manifest, parse_edits, verify_pairs, write_pairs
from distilgan.store.reader import DistillationStore, set_shard_checks, verify_store
from distilgan.store.writer import write_store

__all__ = [
    "ENTRY_PREFIX", "FORMAT_NAME", "FORMAT_VERSION", "LOCK", "MANIFEST", "DistillationStore", "class_counts",
    "clear_entries", "load_manifest", "plan_shards", "read_entries", "read_npz", "resolve_classes",
    "set_shard_checks", "shard_name", "verify_store", "write_npz", "write_store",
    "PAIRS_FORMAT", "PairStore", "load_pairs_manifest", "parse_edits", "verify_pairs", "write_pairs",
]
