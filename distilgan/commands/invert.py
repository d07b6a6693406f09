"""``distilgan invert``: edit real images through a teacher, the slow way (optimise z, redraw the class).

    distilgan invert --teacher SPEC --in IMAGES --label cat --to dog --out DIR [--encoder ENC] [--steps 200]

For each image x of class --label: z* = argmin |T(z, y) - x|^2 + perceptual + prior (edit/invert.py),
by Adam from the encoder's z (``--encoder``, from ``distilgan train-encoder``) or the best of random
starts; then DIR/recon/<name>.png = T(z*, y) and DIR/<to>/<name>.png = T(z*, to) for each --to.
``--steps 0 --encoder ENC`` is the encoder's one-pass inversion alone (any teacher, ONNX included).

Work is done in chunks of --batch-size images, each saved atomically with its images' names
(DIR/chunks/), so a killed run continues where it stopped with the same command; the settings are
written before the first chunk (DIR/chunks/settings.json) and a rerun with others is refused.
DIR/invert.json records them, the seconds per image (with the threads each chunk ran on) and the
mean loss.
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.utils import argtypes

RECORD = "invert.json"
CHUNKS = "chunks"
SETTINGS = "settings.json"  # in CHUNKS: written before the first chunk, checked by every rerun
DEFAULT_FEATURE_NET = "cifar10-vgg11_bn_x0_25"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invert",
        help="edit real images through a teacher by GAN inversion (the slow path)",
        description="Find each image's z in a class-conditional teacher by optimisation (pixel + perceptual "
        "loss, from an encoder's z or random starts), then redraw it as other classes. Resumable.",
    )
    parser.add_argument("--teacher", required=True, help="teacher spec, as for distilgan sample (gradients need a torch "
                        "teacher; with --steps 0 and --encoder any teacher)")
    parser.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="PATH",
                        help="image files, folders or .zip files of images")
    parser.add_argument("--label", required=True, help="class of the input images (name or index)")
    parser.add_argument("--to", nargs="+", default=[], metavar="CLASS", help="classes to redraw each image as (the edits)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (resumable)")
    parser.add_argument("--encoder", metavar="DIR", help="latent encoder checkpoint (train-encoder RUN/generator): the start")
    parser.add_argument("--steps", type=argtypes.nonneg_int, default=200, help="Adam steps per image (default 200)")
    parser.add_argument("--lr", type=argtypes.positive_float, default=0.05, help="Adam learning rate on z (default 0.05)")
    parser.add_argument("--feature-net", default=DEFAULT_FEATURE_NET,
                        help=f"classifier for the perceptual term, or none (default {DEFAULT_FEATURE_NET}: not the "
                        "ResNet-56 that judges the edits)")
    parser.add_argument("--feature-weight", type=argtypes.nonneg_float, default=1.0, help="perceptual term weight (default 1)")
    parser.add_argument("--prior-weight", type=argtypes.nonneg_float, default=1e-3, help="weight of mean(z^2) (default 1e-3)")
    parser.add_argument("--starts", type=argtypes.positive_int, default=8, help="random starts without --encoder (default 8)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=32, help="images optimised together (default 32)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the random starts (default 0)")
    parser.add_argument("--limit", type=argtypes.positive_int, help="only the first N images")
    parser.add_argument("--resize", action="store_true", help="resize images of another size to the teacher's")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--output-range", type=argtypes.finite_float, nargs=2, metavar=("LOW", "HIGH"),
                        help="range of the teacher's raw output, mapped to [-1, 1] (default -1 1; as given to sample)")
    parser.add_argument("--teacher-option", action="append", default=[], metavar="KEY=VALUE",
                        help="adapter option, repeatable (as for sample)")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace, teacher: Any, label: int, names: list[str]) -> dict[str, Any]:
    """Everything that decides the z of a chunk (``--to`` only redraws, so it may change on a rerun)."""
    from distilgan.edit.invert import InversionSettings
    from distilgan.utils.hashing import sha256_tree

    settings = InversionSettings(args.steps, args.lr, args.feature_weight, args.prior_weight, args.starts)
    settings.check()
    inversion = settings.to_dict()
    if args.encoder:
        inversion.pop("starts")  # unused from an encoder's start
    return {"teacher": teacher.spec, "teacher_fingerprint": teacher.fingerprint(),
            "output_range": list(teacher.output_range), "label": label, "inversion": inversion,
            "feature_net": None if args.feature_net == "none" else args.feature_net,
            "encoder_sha256": sha256_tree(Path(args.encoder)) if args.encoder else None,
            "batch_size": args.batch_size, "seed": args.seed, "device": str(args.device), "images": names}


def _check_settings(chunk_dir: Path, settings: dict[str, Any]) -> None:
    """Write the settings before the first chunk; refuse a rerun whose settings differ from them."""
    from distilgan.utils.atomic import atomic_write_json

    path = chunk_dir / SETTINGS
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{path} is unreadable (delete {chunk_dir.parent} or choose another --out)") from None
        for key, value in settings.items():
            if json.loads(json.dumps(old.get(key))) != json.loads(json.dumps(value)):
                raise UserError(f"{chunk_dir.parent} holds an inversion made with another {key.replace('_', ' ')} "
                                "(choose another --out, or delete it)")
        return
    chunk_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def _read_chunk(path: Path, names: list[str]) -> dict[str, Any] | None:
    """A finished chunk's arrays, or None (absent, unreadable, or of other images: it is redone)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            chunk = {key: data[key].copy() for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        print(f"invert: {path.name} is unreadable; inverting its images again")
        return None
    if list(chunk.get("names", [])) != names or len(chunk.get("z", [])) != len(names):
        print(f"invert: {path.name} holds other images; inverting its images again")
        return None
    return chunk


def _probe_gradients(teacher: Any, label: int) -> None:
    """Fail in one line, before any folder is made, when z cannot be optimised through this teacher."""
    import torch

    z = torch.zeros(1, teacher.z_dim, requires_grad=True)
    try:
        out = teacher.torch_generate(z, torch.tensor([label]))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a user's callable may fail in any way
        raise UserError(f"teacher {teacher.spec} failed on a gradient probe ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); use --steps 0 with an --encoder") from None
    if not getattr(out, "requires_grad", False):
        raise UserError(f"teacher {teacher.spec} returns images without gradients (it runs under no_grad or "
                        "inference_mode): use --steps 0 with an --encoder, or give a differentiable teacher")


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.commands.sample import parse_teacher_options
    from distilgan.data.image_inputs import check_inputs, collect_inputs, decode_item, unique_names
    from distilgan.edit.invert import InversionSettings, PerceptualDistance, invert
    from distilgan.teachers import load_teacher
    from distilgan.utils.atomic import atomic_path, atomic_write_json
    from distilgan.utils.images import float_to_uint8, nchw_to_nhwc, nhwc_to_nchw, save_png, uint8_to_float
    from distilgan.utils.labels import resolve_labels
    from distilgan.utils.paths import check_output_dir
    from distilgan.utils.progress import note, progress_bar

    out = Path(args.out)
    check_output_dir(out, "--out")  # before the slow loads: a bad place fails first
    if args.steps == 0 and not args.encoder:
        raise UserError("--steps 0 needs an --encoder (there would be nothing to invert with)")
    teacher = load_teacher(args.teacher, device=args.device, **parse_teacher_options(args.teacher_option),
                           output_range=tuple(args.output_range) if args.output_range else None)
    label = int(resolve_labels([args.label], teacher.class_names, teacher.num_classes, owner="the teacher's")[0])
    targets = [int(t) for t in resolve_labels(args.to, teacher.class_names, teacher.num_classes,
                                              owner="the teacher's")] if args.to else []
    teacher.generate(np.zeros((2, teacher.z_dim), np.float32), np.full(2, label, np.int64))  # range, shape: one line
    if args.steps > 0:
        _probe_gradients(teacher, label)
    items, _ = collect_inputs(args.inputs, out)
    items = items[: args.limit] if args.limit else items
    check_inputs(items, teacher.resolution, teacher.channels, args.resize, model="the teacher")
    names = unique_names([item.out_name for item in items])
    encoder = None
    if args.encoder:
        from distilgan.models import load_pretrained
        from distilgan.models.encoder import LatentEncoder

        encoder = load_pretrained(args.encoder, device=args.device)
        if not isinstance(encoder, LatentEncoder) or encoder.z_dim != teacher.z_dim or encoder.num_classes != teacher.num_classes:
            raise UserError(f"--encoder {args.encoder} is not a latent encoder of this teacher's z ({teacher.z_dim}) "
                            f"and classes ({teacher.num_classes}) (train one with distilgan train-encoder)")
        trained_on = encoder.config.get("teacher_fingerprint")
        if trained_on and trained_on != teacher.fingerprint():
            note(f"--encoder {args.encoder} was trained on another teacher's samples (fingerprint {trained_on[:12]}...): "
                 "its z is only a start")
    distance = None
    if args.feature_net != "none" and args.steps > 0 and args.feature_weight > 0:
        from distilgan.metrics.class_agreement import load_judge

        distance = PerceptualDistance(load_judge(args.feature_net, device=args.device)[0])
    settings = _settings(args, teacher, label, names)
    chunk_dir = out / CHUNKS
    _check_settings(chunk_dir, settings)
    inversion = InversionSettings(**{"starts": args.starts, **settings["inversion"]})

    chunks: list[dict[str, Any]] = []
    done = 0
    with progress_bar(total=len(items), desc="invert", unit="img") as bar:
        for index, start in enumerate(range(0, len(items), args.batch_size)):
            path = chunk_dir / f"chunk-{index:05d}.npz"
            chosen, chosen_names = items[start:start + args.batch_size], names[start:start + args.batch_size]
            chunk = _read_chunk(path, chosen_names)
            if chunk is None:
                pixels = np.stack([decode_item(item, teacher.resolution, teacher.channels, args.resize) for item in chosen])
                images = torch.from_numpy(uint8_to_float(nhwc_to_nchw(pixels)))
                labels = torch.full((len(chosen),), label, dtype=torch.long)
                began = time.perf_counter()
                z, loss = invert(teacher, images, labels, inversion, seed=args.seed * 100003 + index, encoder=encoder,
                                 distance=distance)
                chunk = {"z": z, "loss": loss, "names": np.asarray(chosen_names), "seconds": np.float64(time.perf_counter() - began),
                         "threads": np.int64(torch.get_num_threads())}
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.savez(handle, **chunk)
                done += len(chosen)
            chunks.append(chunk)
            bar.update(len(chosen))

    z_all = np.concatenate([c["z"] for c in chunks])
    loss_all = np.concatenate([c["loss"] for c in chunks])
    seconds = float(sum(float(c["seconds"]) for c in chunks))
    threads = sorted({int(c.get("threads", -1)) for c in chunks})
    for folder, cls in [("recon", label)] + [(_class_folder(teacher, t), t) for t in targets]:
        drawn = nchw_to_nhwc(float_to_uint8(teacher.generate(z_all, np.full(len(z_all), cls, np.int64))))
        for name, image in zip(names, drawn, strict=True):
            save_png(image, out / folder / name)
    with atomic_path(out / "latents.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, z=z_all, labels=np.full(len(z_all), label, np.int64), loss=loss_all, names=np.asarray(names))
    per_image = seconds / max(1, len(z_all))
    atomic_write_json(out / RECORD, {"settings": {**settings, "to": targets}, "images": len(z_all),
                                     "seconds": round(seconds, 3), "seconds_per_image": round(per_image, 4),
                                     "threads": threads, "device": str(args.device), "mean_loss": float(loss_all.mean())})
    redrawn = ", ".join(_class_folder(teacher, t) for t in targets) or "none"
    print(f"invert: {len(z_all)} images of {_class_folder(teacher, label)} ({done} now, {len(z_all) - done} resumed), "
          f"{per_image:.3f} s per image ({args.steps} steps, {'/'.join(map(str, threads))} thread(s), {args.device}), "
          f"mean loss {loss_all.mean():.4f}; redrawn as {redrawn} in {out}")
    return 0


def _class_folder(teacher: Any, label: int) -> str:
    names = teacher.class_names
    return str(names[label]) if names else str(label)
