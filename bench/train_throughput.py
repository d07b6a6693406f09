"""Training throughput of the distillation step (samples/s), default DiStyleGAN model, batch 128.

    .venv/bin/python bench/train_throughput.py [--steps 20] [--warmup 3] [--device cpu] [--no-real]

Two step kinds, as they occur in training: "every-step" (D update + G feature/pixel terms; 9 of 10
steps with --gstep 10) and "gstep" (the same plus G's two adversarial terms). Batches are synthetic
tensors already in memory, so this measures the model maths of the training loop's ``train_step``
(objective, backward, Adam, EMA), not the store reading. Prints a table and writes
bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from distilgan.models import DiStyleGANDiscriminator, DiStyleGANGenerator
from distilgan.train.config import TrainConfig
from distilgan.train.losses import DistillationObjective
from distilgan.train.distributed import DistContext, resolve_device
from distilgan.train.training_loop import Trainer
from distilgan.utils.atomic import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def synthetic_batch(batch: int, z_dim: int, classes: int, resolution: int, real: bool, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    out = {
        "z": torch.randn(batch, z_dim, generator=gen),
        "labels": torch.arange(batch) % classes,
        "teacher_images": torch.rand(batch, 3, resolution, resolution, generator=gen) * 2 - 1,
    }
    if real:
        out["real_images"] = torch.rand(batch, 3, resolution, resolution, generator=gen) * 2 - 1
        out["real_labels"] = torch.arange(batch) % classes
    return {k: v.to(device) for k, v in out.items()}


def time_steps(trainer: Trainer, batch: dict, steps: int, adversarial: bool, gstep: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per step of one kind; the step counter is set so the objective
    picks that kind. CPU time is what to compare on a shared machine: wall time there includes
    waiting for other processes."""
    device = trainer.dist.device
    wall = cpu = 0.0
    for i in range(steps):
        trainer.step = (i + 1) * gstep if adversarial else (i * gstep + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    return wall / steps, cpu / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per kind (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--no-real", action="store_true", help="black-box only: no real-data terms")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config = TrainConfig(batch_size=args.batch_size, amp=args.amp)
    torch.manual_seed(0)
    G, D = DiStyleGANGenerator(), DiStyleGANDiscriminator()  # reference defaults: 32x32, 10 classes, z 512
    objective = DistillationObjective(G, D, z_dim=G.z_dim, num_classes=G.num_classes, gstep=config.gstep)
    trainer = Trainer(config, G, D, objective, dist=DistContext(device=device))
    batch = synthetic_batch(args.batch_size, G.z_dim, G.num_classes, G.resolution, not args.no_real, device)
    for adversarial in (False, True):
        time_steps(trainer, batch, args.warmup, adversarial, config.gstep)

    rows = []
    for kind, adversarial in (("every-step", False), ("gstep", True)):
        wall, cpu = time_steps(trainer, batch, args.steps, adversarial, config.gstep)
        rows.append({"kind": kind, "seconds_per_step": wall, "samples_per_s": args.batch_size / wall,
                     "cpu_seconds_per_step": cpu, "samples_per_cpu_s": args.batch_size / cpu})
    # the mix seen in training: 1 gstep step per gstep steps
    mix = {key: ((config.gstep - 1) * rows[0][key] + rows[1][key]) / config.gstep
           for key in ("seconds_per_step", "cpu_seconds_per_step")}
    rows.append({"kind": f"mixed (1 in {config.gstep})", **mix,
                 "samples_per_s": args.batch_size / mix["seconds_per_step"],
                 "samples_per_cpu_s": args.batch_size / mix["cpu_seconds_per_step"]})

    print(f"{'step kind':<18} {'s/step':>8} {'samples/s':>10} {'cpu s/step':>11} {'samples/cpu-s':>14}")
    for row in rows:
        print(f"{row['kind']:<18} {row['seconds_per_step']:>8.3f} {row['samples_per_s']:>10.1f} "
              f"{row['cpu_seconds_per_step']:>11.3f} {row['samples_per_cpu_s']:>14.1f}")
    result = {
        "benchmark": "train_throughput",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()), "python": platform.python_version(),
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "amp": trainer.use_amp,
        "real_data_terms": not args.no_real, "model": {"generator": G.config, "discriminator": D.config},
        "rows": rows,
    }
    out = Path(args.out)
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
