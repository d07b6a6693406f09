"""Training throughput, today's path against the new one in the same run (issue 15).

    .venv/bin/python bench/train_throughput.py [--steps 10] [--warmup 2] [--models student teacher-ch64]

Per model, batch 128 with the real-data terms, two paths timed one after the other in this process:

* ``before``: what distilgan did until issue 15: fp32, NCHW, and for the student the store streamed
  through a DataLoader with the default 2 worker processes (``--store-in-memory off``) and the last
  discriminator block as oneDNN's convolution;
* ``after``: the defaults now: ``--precision auto`` (its probe's choice is printed), each network's
  memory format (BigGAN G and D channels_last, DiStyleGAN D channels_last and G NCHW), the store read
  once into memory, the student D's 4x4 -> 2x2 block as one matrix product.

The student's store is a synthetic 2,560-sample set written to a temporary folder; the teacher's
real data are random uint8 images in memory (the same for both paths). Reported per path: samples/s
(wall), CPU-seconds per sample (this process and its DataLoader workers), joules per sample where
RAPL is readable, and the ratio after/before. Prints a table, writes bench/results/train_throughput.json
with the machine's CPU model, bf16/AMX flags, load average, date and command.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_facts  # noqa: E402

from distilgan.train.config import LoopConfig  # noqa: E402
from distilgan.train.distributed import DistContext  # noqa: E402
from distilgan.train.training_loop import Trainer  # noqa: E402
from distilgan.utils.atomic import atomic_write_json  # noqa: E402
from distilgan.utils.energy import CostMeter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
BATCH = 128


def make_store(folder: Path) -> Path:
    from distilgan.teachers.base import Teacher
    from distilgan.store import write_store

    class Toy(Teacher):
        spec = "bench:toy"

        def __init__(self) -> None:
            self.z_dim, self.num_classes, self.resolution, self.channels = 512, 10, 32, 3
            self.class_names = [f"c{i}" for i in range(10)]

        def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
            pixels = np.tanh(z[:, :1, None, None] * np.linspace(-1, 1, 32)[None, None, :, None]
                             + labels[:, None, None, None] / 10.0)
            return np.broadcast_to(pixels, (len(z), 3, 32, 32)).astype(np.float32)

        def fingerprint(self) -> str:
            return "bench-toy"

    path = folder / "store"
    write_store(Toy(), path, per_class=256, shard_size=640, progress=False)
    return path


def student_trainer(path: str, store: Path, real: tuple[np.ndarray, np.ndarray]) -> tuple[Trainer, Any]:
    from distilgan.models import DiStyleGANDiscriminator, DiStyleGANGenerator
    from distilgan.train.batches import RealSampler, StoreBatches
    from distilgan.train.losses import DistillationObjective

    torch.manual_seed(0)
    G, D = DiStyleGANGenerator(), DiStyleGANDiscriminator()
    for module in D.modules():  # the last D block as oneDNN's convolution before, as one matmul after
        if hasattr(module, "matmul_small_maps"):
            module.matmul_small_maps = path != "before"
    objective = DistillationObjective(G, D, z_dim=G.z_dim, num_classes=G.num_classes)
    dist = DistContext()
    before = path == "before"
    config = LoopConfig(batch_size=BATCH, precision="fp32" if before else "auto", channels_last=False if before else None)
    sampler = RealSampler(real[0], real[1], BATCH, 0, dist)
    source = StoreBatches(str(store), BATCH, 0, dist, workers=2 if before else 0, real=sampler, in_memory=not before)
    return Trainer(config, G, D, objective, source, dist=dist), source


def teacher_trainer(path: str, real: tuple[np.ndarray, np.ndarray]) -> tuple[Trainer, Any]:
    from distilgan.models import BigGANDiscriminator, BigGANGenerator
    from distilgan.train.batches import RealBatches
    from distilgan.train.losses import GANObjective

    torch.manual_seed(0)
    G = BigGANGenerator(z_dim=128, num_classes=10, ch=64, resolution=32, channels=3, shared_dim=128)
    D = BigGANDiscriminator(num_classes=10, ch=64, resolution=32, channels=3)
    objective = GANObjective(G, D, z_dim=128, num_classes=10, d_steps=4)
    dist = DistContext()
    before = path == "before"
    config = LoopConfig(batch_size=BATCH, beta1=0.0, precision="fp32" if before else "auto",
                         channels_last=False if before else None)
    return Trainer(config, G, D, objective, RealBatches(real[0], real[1], BATCH, 0, dist, mirror=True), dist=dist), None


def time_path(trainer: Trainer, steps: int, warmup: int) -> dict[str, Any]:
    """Steps through the source's batches as fit() does (so the data path is timed too)."""
    assert trainer.source is not None
    done, meter = 0, None
    epoch = 0
    while done < warmup + steps:
        for batch in trainer.source.batches(epoch):
            if done == warmup:
                meter = CostMeter()
            trainer.train_step(batch)
            done += 1
            if done >= warmup + steps:
                break
        epoch += 1
    assert meter is not None
    cost = meter.per_item(steps * BATCH)
    return {"samples_per_s": 1.0 / float(cost["wall_s_per_item"]), "cpu_s_per_sample": cost["cpu_s_per_item"],
            "joules_per_sample": cost["joules_per_item"], "precision": trainer.precision,
            "precision_reason": trainer.precision_reason, "channels_last": trainer.channels_last}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed loop steps per path (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--models", nargs="+", default=["student", "teacher-ch64"], choices=["student", "teacher-ch64"])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    info = machine_facts()
    generator = np.random.default_rng(0)
    real = (generator.integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8), np.arange(4096) % 10)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp)) if "student" in args.models else None
        for model in args.models:
            result: dict[str, Any] = {"model": model}
            for path in ("before", "after"):
                if model == "student":
                    trainer, _ = student_trainer(path, store, real)
                else:
                    trainer, _ = teacher_trainer(path, real)
                result[path] = time_path(trainer, args.steps, args.warmup)
                print(f"{model:<13} {path:<6} {result[path]['samples_per_s']:8.1f} samples/s "
                      f"{result[path]['cpu_s_per_sample'] * 1e3:8.2f} CPU-ms/sample  ({result[path]['precision']}, "
                      f"{result[path]['precision_reason']}; channels_last {result[path]['channels_last'] or 'none'})",
                      flush=True)
            result["speedup"] = result["after"]["samples_per_s"] / result["before"]["samples_per_s"]
            result["cpu_cost_ratio"] = result["before"]["cpu_s_per_sample"] / result["after"]["cpu_s_per_sample"]
            rows.append(result)
    print(f"\n{'model':<13} {'before':>10} {'after':>10} {'speed-up':>9} {'CPU-cost ratio':>15}  (samples/s, batch {BATCH}, "
          "with real-data terms)")
    for r in rows:
        print(f"{r['model']:<13} {r['before']['samples_per_s']:>10.1f} {r['after']['samples_per_s']:>10.1f} "
              f"{r['speedup']:>8.2f}x {r['cpu_cost_ratio']:>14.2f}x")
    energy = rows[0]["after"]["joules_per_sample"] if rows else "not readable"
    print(f"energy: {'RAPL' if energy != 'not readable' else 'not readable (no /sys/class/powercap/intel-rapl*)'}")
    info["load_average_end"] = list(os.getloadavg())
    atomic_write_json(Path(args.out), {"benchmark": "train_throughput", "batch_size": BATCH, "steps": args.steps,
                                       "warmup": args.warmup, "machine": info, "rows": rows,
                                       "command": " ".join(["python", *sys.argv])})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
