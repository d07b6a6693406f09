"""``distilgan gif RUN``: the per-epoch sample grids of a run as one training-evolution GIF."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distilgan.errors import UserError
from distilgan.utils import argtypes


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gif",
        help="turn a run's per-epoch grids into an animated GIF",
        description="Join RUN/grids/epoch-XXXX.png (written by distilgan distill) into one GIF, oldest first.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="run folder of distilgan distill")
    parser.add_argument("--out", help="GIF to write (default RUN/training.gif)")
    parser.add_argument("--fps", type=argtypes.positive_float, default=4.0, help="frames per second (default 4)")
    parser.add_argument("--hold-last", type=argtypes.nonneg_float, default=1.0,
                        help="seconds to show the last frame before the loop starts again (default 1)")
    parser.set_defaults(func=run)


CAPTION_HEIGHT = 14


def _captioned(image: "Any", text: str) -> "Any":
    """The frame with a strip of text under it (epoch, and which frame holds the best metric)."""
    from PIL import Image, ImageDraw

    framed = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), (255, 255, 255))
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((3, image.height + 1), text, fill=(0, 0, 0))
    return framed


def best_epoch(run_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """(epoch of the grid that shows the best in-loop snapshot, its metrics record), if the run has metrics."""
    from distilgan.train.loop_metrics import read_metrics

    records = read_metrics(run_dir)
    scored = [r for r in records if r.get("best")]
    if not scored:
        return None
    best = scored[-1]  # the last record that was a new best is the best
    epoch = int(best.get("grid_epoch", best.get("epoch", 0) + 1))
    return epoch, best


def make_gif(frames_paths: list[Path], out: Path, fps: float = 4.0, hold_last: float = 1.0,
             captions: list[str] | None = None) -> int:
    """Write ``out`` atomically; returns the number of frames."""
    from PIL import Image

    from distilgan.utils.atomic import atomic_path

    frames = []
    for i, path in enumerate(frames_paths):
        with Image.open(path) as image:
            frame = image.convert("RGB")
        frames.append(_captioned(frame, captions[i]) if captions else frame)
    size = frames[-1].size
    # a grid's size never changes within a run, but a later rerun with other --grid-columns could
    frames = [f if f.size == size else f.resize(size, Image.Resampling.NEAREST) for f in frames]
    # one palette for the whole animation, from the last (most detailed) frame: no colour flicker
    palette = frames[-1].quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    indexed = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    frame_ms = max(20, int(round(1000.0 / fps)))
    durations = [frame_ms] * len(indexed)
    durations[-1] = max(frame_ms, int(round(1000.0 * hold_last)))
    with atomic_path(out) as tmp:
        indexed[0].save(tmp, format="GIF", save_all=True, append_images=indexed[1:], duration=durations,
                        loop=0, optimize=False, disposal=1)
    return len(indexed)


def run(args: argparse.Namespace) -> int:
    from distilgan.train.logging import GRID_DIR

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir} (give the --out folder of distilgan distill)")
    if not args.fps > 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    from distilgan.utils.paths import check_output_file

    check_output_file(args.out or run_dir / "training.gif", "--out")  # before the grids are read
    paths = sorted((run_dir / GRID_DIR).glob("epoch-*.png"))
    if not paths:
        raise UserError(f"no grids in {run_dir / GRID_DIR} (train with distilgan distill first; grids are saved every --grid-every epochs)")
    out = Path(args.out) if args.out else run_dir / "training.gif"
    best = best_epoch(run_dir)
    epochs = [int(p.stem.split("-")[1]) for p in paths]
    marked = next((e for e in epochs if best and e >= best[0]), None)  # first frame drawn with the best weights
    captions = [f"epoch {e}" + ("  <- best" if e == marked else "") for e in epochs]
    count = make_gif(paths, out, fps=args.fps, hold_last=args.hold_last, captions=captions)
    print(f"gif: {count} frames -> {out}")
    if best is not None:
        epoch, record = best
        name = next(k for k in ("kid", "fid") if k in record)
        print(f"gif: best in-loop {name} {record[name]:.5g} at step {record['step']} (shown from the epoch-{epoch:04d} "
              f"frame on; snapshot in {run_dir / 'best'})")
    return 0
