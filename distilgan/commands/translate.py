"""``distilgan translate``: run an image-to-image student on image files, folders or zips of images.

Each input becomes ``OUT/<its relative name>.png`` (a folder's files keep their sub-folders, a zip's
its member paths, a file its name); names that would collide get ``-1``, ``-2`` ... Every file is
checked (readable image, size) before the first output is written, so a bad input fails in one line
and leaves nothing half done (data/image_inputs.py, shared with ``invert``). The model is reached
through one batch function, uint8 NHWC in and out (:class:`Backend`): a torch checkpoint
(:func:`torch_backend`) or an export of ``distilgan export`` run by ONNX Runtime / OpenVINO without
torch (:func:`exported_backend`, ``deploy/runtime.py``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distilgan.errors import UserError
from distilgan.utils import argtypes

STRIP_PAIRS = 16


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "translate",
        help="apply a distilled image-to-image edit to image files",
        description=(
            "Translate images with an image-to-image student (e.g. automobile -> truck). --in takes image files, "
            "folders and .zip files of images (PNG/JPEG); every image becomes OUT/<relative name>.png. Images must "
            "have the model's size unless --resize; grayscale or RGBA images are converted to the model's channels."
        ),
    )
    parser.add_argument("--checkpoint", required=True,
                        help="translator checkpoint folder (config.json + model.safetensors), e.g. RUN/generator; or its "
                             "export (the folder distilgan export wrote, or its model.onnx / model.xml), run without torch")
    parser.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="PATH", help="image files, folders or .zip files of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the translated PNGs")
    parser.add_argument("--edit", metavar="NAME", help="which edit (a name such as automobile:truck, or its index); required when the model does several")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu; an export runs on the CPU)")
    parser.add_argument("--threads", type=argtypes.positive_int, help="an export: CPU threads of its runtime (default: the runtime's)")
    parser.add_argument("--resize", action="store_true", help="resize images of another size to the model's (area when shrinking, bicubic when enlarging)")
    parser.add_argument("--strip", metavar="FILE.png", help=f"also write a PNG of the first {STRIP_PAIRS} inputs (top row) above their outputs")
    parser.set_defaults(func=run)


# --- the model behind one batch function ---------------------------------------------------------


@dataclass
class Backend:
    """What the command needs of a model: its input size and one uint8 NHWC -> uint8 NHWC function."""

    resolution: int
    channels: int
    edit_name: str
    run: Callable[[np.ndarray], np.ndarray]


def _chosen_edit(model: Any, edit: str | None) -> int:
    """--edit -> the model's edit index (anything with num_edits, edit_names and edit_index)."""
    if edit is None:
        if model.num_edits > 1:
            raise UserError(f"--edit is required: this translator does {model.num_edits} edits ({', '.join(model.edit_names)})")
        return 0
    try:
        return model.edit_index(edit)
    except UserError as err:
        raise UserError(f"--edit: {err}") from None


def torch_backend(checkpoint: str, device: str, edit: str | None) -> Backend:
    from distilgan.pipeline import ImageTranslator

    translator = ImageTranslator.from_pretrained(checkpoint, device=device)
    index = _chosen_edit(translator.model, edit)
    return Backend(translator.resolution, translator.channels, translator.edits[index],
                   lambda batch: translator.translate_uint8(batch, index))


def exported_backend(path: str, edit: str | None, threads: int | None = None) -> Backend:
    """An export (ONNX Runtime or OpenVINO; no torch) behind the same batch function."""
    from distilgan.deploy.runtime import EdgeTranslator

    translator = EdgeTranslator(path, threads=threads)
    index = _chosen_edit(translator, edit)
    return Backend(translator.resolution, translator.channels, translator.edit_names[index],
                   lambda batch: translator.translate_uint8(batch, index))


def make_backend(args: argparse.Namespace) -> Backend:
    from distilgan.deploy.runtime import is_export

    if is_export(args.checkpoint):
        argtypes.refuse_unless(args, "--device", args.device == "cpu", "chooses a torch device, and an export runs on the CPU")
        return exported_backend(args.checkpoint, args.edit, args.threads)
    argtypes.refuse_unless(args, "--threads", False, "sets the threads of an exported model's runtime, and --checkpoint is a torch checkpoint")
    return torch_backend(args.checkpoint, args.device, args.edit)


# --- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from distilgan.data.image_inputs import PROGRESS_FROM, check_inputs, collect_inputs, decode_item, unique_names
    from distilgan.utils.images import make_grid, save_png
    from distilgan.utils.paths import check_output_dir, check_output_file
    from distilgan.utils.progress import note, progress_bar

    out = check_output_dir(args.out, "--out")
    if args.strip is not None:
        if Path(args.strip).suffix.lower() != ".png":
            raise UserError(f"--strip {args.strip} must be a .png file")
        check_output_file(args.strip, "--strip")
    items, skipped = collect_inputs(args.inputs, out)
    names = unique_names([item.out_name for item in items], [item.out_name == item.name for item in items])
    for item, name in zip(items, names):
        if item.source is not None and (out / name).resolve() == item.source:
            raise UserError(f"--out {args.out} would overwrite its input {item.source} (choose another --out)")
    backend = make_backend(args)
    if skipped:
        note(f"skipped {skipped} files that are not images (PNG/JPEG) in the --in folders/zips")
    renamed = [name for item, name in zip(items, names) if name != item.out_name]
    if renamed:
        note(f"{len(renamed)} output names were taken by another input and got a suffix (e.g. {renamed[0]})")
    size, channels = backend.resolution, backend.channels
    check_inputs(items, size, channels, args.resize)

    strip_in: list[np.ndarray] = []
    strip_out: list[np.ndarray] = []
    start = time.perf_counter()
    with progress_bar(total=len(items), desc="translate", unit="img", disable=len(items) < PROGRESS_FROM) as bar:
        for first in range(0, len(items), args.batch_size):
            chunk = items[first : first + args.batch_size]
            batch = np.stack([decode_item(item, size, channels, args.resize) for item in chunk])
            result = backend.run(batch)
            for image, name in zip(result, names[first : first + len(chunk)]):
                save_png(image, out / name)
            if len(strip_in) < STRIP_PAIRS:
                keep = STRIP_PAIRS - len(strip_in)
                strip_in += list(batch[:keep])
                strip_out += list(result[:keep])
            bar.update(len(chunk))
    seconds = time.perf_counter() - start
    if args.strip is not None:
        save_png(make_grid(np.stack(strip_in + strip_out), nrow=len(strip_in)), args.strip)
    strip = f"; input/output strip {args.strip}" if args.strip is not None else ""
    print(f"translated {len(items)} images (edit {backend.edit_name}) to {out} in {seconds:.2f} s, "
          f"{seconds / len(items):.4f} s per image{strip}")
    return 0
