"""``distilgan generate``: images from a trained student, as PNG files, one PNG grid, or an .npz.

The same checkpoint, labels, counts, seed and truncation always give byte-identical files: z is
drawn from the seed alone, PNGs carry no timestamps and the .npz is written with fixed zip dates.
By default z follows the checkpoint's own distribution and the classes are the ones it was trained
on, in its order (a grid row each).
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

import numpy as np

from distilgan.errors import UserError
from distilgan.utils import argtypes
from distilgan.utils.noise import Z_KINDS
from distilgan.utils.seeds import seed_list

# Suffixes that look like a file the user wanted but that we do not write.
UNSUPPORTED_SUFFIXES = {".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".npy", ".pt", ".pth"}
DEFAULT_PER_CLASS = 8


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images with a trained student",
        description=(
            "Generate class-conditional images with a student checkpoint. --out DIR writes one PNG per "
            "image named <class>_<seed>_<index>.png; --out FILE.png writes a grid (one row per class with "
            "--per-class); --out FILE.npz writes arrays images (uint8 NHWC), labels (int64) and z (float32). "
            "The same seed gives identical files. --seeds 0-99 gives every image its own seed (saved as 'seeds' "
            "in an .npz and as <seed> in file names), so one image can be made again alone with --seeds S --labels L."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors) or built-in name")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="class names or indices (default: every class the model was trained on, in its order)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--per-class", type=argtypes.positive_int, metavar="N", help=f"images per label, grouped by label (default {DEFAULT_PER_CLASS})")
    count.add_argument("--n", type=argtypes.positive_int, metavar="N", help="images in total, cycling through the labels")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="noise seed (default 0)")
    parser.add_argument("--seeds", type=seed_list, metavar="LIST",
                        help="one image per seed for every label, each from its own seed, e.g. 0-99 or 0-3,7 "
                             "(instead of --seed, --per-class and --n; a grid has one column per seed)")
    parser.add_argument("--truncation", type=argtypes.positive_float, metavar="T",
                        help="threshold t of z's distribution (default: the model's own, from its config.json)")
    parser.add_argument("--truncation-kind", metavar="KIND",
                        help=f"z's distribution: {', '.join(Z_KINDS)} (default: the model's own; with only "
                             "--truncation, the model's kind, or truncated when its z is normal)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=256, help="images per forward pass (default 256)")
    parser.add_argument("--out", required=True, metavar="PATH", help="a folder, a .png grid, or an .npz file")
    parser.set_defaults(func=run)


def output_kind(out: str) -> str:
    """"png-grid", "npz" or "folder", from the path's suffix."""
    suffix = Path(out).suffix.lower()
    if suffix == ".png":
        return "png-grid"
    if suffix == ".npz":
        return "npz"
    if suffix in UNSUPPORTED_SUFFIXES:
        raise UserError(f"cannot write {out}: --out must be a folder, a .png grid or an .npz file")
    if Path(out).is_file():
        raise UserError(f"--out {out} is an existing file; give a folder, a .png or an .npz path")
    return "folder"


def safe_name(name: str) -> str:
    """A class name usable in a file name on every OS."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but with fixed zip timestamps so equal arrays give equal bytes."""
    from distilgan.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for key, array in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def _describe_seeds(seeds: list[int]) -> str:
    """[0, 1, 2, 7] -> "0-2,7" (short, and pasteable back into --seeds)."""
    parts: list[str] = []
    start = prev = seeds[0]
    for seed in [*seeds[1:], None]:
        if seed is not None and seed == prev + 1:
            prev = seed
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if seed is not None:
            start = prev = seed
    return ",".join(parts)


def run(args: argparse.Namespace) -> int:
    from distilgan.pipeline import StudentGenerator, to_uint8_nhwc
    from distilgan.utils.images import save_grid, save_png
    from distilgan.utils.labels import resolve_labels
    from distilgan.utils.noise import balanced_labels
    from distilgan.utils.paths import check_output_dir, check_output_file

    kind = output_kind(args.out)
    (check_output_dir if kind == "folder" else check_output_file)(args.out, "--out")  # before the model loads
    for option, value in (("--per-class", args.per_class), ("--n", args.n), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be >= 1, got {value}")
    if args.truncation_kind is not None and args.truncation_kind not in Z_KINDS:
        raise UserError(f"unknown --truncation-kind '{args.truncation_kind}' (choose from {', '.join(Z_KINDS)})")
    generator = StudentGenerator.from_pretrained(args.checkpoint, device=args.device)
    distribution = generator.z_distribution_for(args.truncation, args.truncation_kind)  # fail before any work
    trained = generator.classes
    classes = (resolve_labels(args.labels, generator.class_names, strict=False, allowed=trained)
               if args.labels else np.asarray(trained, dtype=np.int64))
    per_class = seeds = None
    if args.seeds is not None:
        argtypes.refuse_unless(args, "--seed", False, "is one seed for the whole list, and --seeds gives each image its own")
        if args.per_class is not None or args.n is not None:
            raise UserError("--seeds makes one image per seed for every label; leave out --per-class and --n")
        per_class = len(args.seeds)  # a grid row per label, a column per seed
        labels = np.repeat(classes, per_class)
        seeds = np.tile(np.asarray(args.seeds, dtype=np.int64), len(classes))
    elif args.n is not None:
        labels = balanced_labels(0, args.n, classes)
    else:
        per_class = args.per_class or DEFAULT_PER_CLASS
        labels = np.repeat(classes, per_class)  # grouped: one grid row per class

    images, labels, z = generator.sample(
        labels, seed=args.seed, truncation=args.truncation, truncation_kind=args.truncation_kind,
        batch_size=args.batch_size, progress=True, seeds=None if seeds is None else seeds.tolist(),
    )
    array = to_uint8_nhwc(images)
    out = Path(args.out)
    names = generator.class_names
    if kind == "npz":
        extra = {} if seeds is None else {"seeds": seeds}  # image i's own seed
        save_npz_deterministic(out, images=array, labels=labels, z=z, **extra)
    elif kind == "png-grid":
        save_grid(array, out, nrow=per_class)
    else:
        from distilgan.utils.progress import progress_bar

        out.mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(progress_bar(list(zip(array, labels)), desc="write", unit="png", disable=len(array) < 64)):
            own = args.seed if seeds is None else int(seeds[index])
            save_png(image, out / f"{safe_name(names[label])}_{own}_{index}.png")
    used = list(dict.fromkeys(labels.tolist()))  # classes in order of first use
    shown = ", ".join(names[c] for c in used[:10]) + (" ..." if len(used) > 10 else "")
    seeding = f"seed {args.seed}" if seeds is None else f"seeds {_describe_seeds(args.seeds)}, one per image"
    print(f"wrote {len(array)} images ({shown}; {seeding}, z {distribution.describe()}) to {out}")
    return 0
