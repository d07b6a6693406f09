"""How fast does the store write a distillation set when the teacher costs (almost) nothing?

The teacher here returns a cheap image derived from z, so the numbers measure our side of
``distilgan sample``: drawing z, quantising to uint8, npz writing, sha256, fsync and the manifest.
The target is >= 20,000 32x32 samples/s (z_dim 512) on a 2-core machine.

    .venv/bin/python bench/store_write.py --count 100000 --shard-size 10000
    .venv/bin/python bench/store_write.py --count 50000 --shard-size 2000 5000 10000 --batch-size 1024

Prints a table and writes bench/results/store_write.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from distilgan.store import verify_store, write_store
from distilgan.teachers.base import Teacher
from distilgan.utils.atomic import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "store_write.json"


class TrivialTeacher(Teacher):
    """An image that is the first z value of each sample, broadcast: almost free to compute."""

    spec = "bench:trivial"
    native_truncation = False

    def __init__(self, z_dim: int, num_classes: int, resolution: int, channels: int = 3) -> None:
        self.z_dim, self.num_classes, self.resolution, self.channels = z_dim, num_classes, resolution, channels

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        value = np.tanh(z[:, :1, None, None])
        # A fresh contiguous array, as a real teacher returns (a broadcast view would be slower to read).
        return np.ascontiguousarray(np.broadcast_to(value, (len(z), self.channels, self.resolution, self.resolution)))

    def fingerprint(self) -> str:
        return "trivial"


def run_one(count: int, shard_size: int, batch_size: int, z_dim: int, resolution: int, root: Path) -> dict:
    teacher = TrivialTeacher(z_dim, 10, resolution)
    out = root / f"set-{shard_size}-{batch_size}"
    per_class = count // 10
    start, cpu_start = time.perf_counter(), time.process_time()
    write_store(teacher, out, per_class=per_class, shard_size=shard_size, batch_size=batch_size, progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    start = time.perf_counter()
    problems = verify_store(out)
    verify_seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.glob("shard-*.npz"))
    shutil.rmtree(out)
    total = per_class * 10
    return {
        "samples": total, "shard_size": shard_size, "batch_size": batch_size, "z_dim": z_dim,
        "resolution": resolution, "seconds": round(seconds, 3), "samples_per_s": round(total / seconds),
        "cpu_seconds": round(cpu_seconds, 3), "samples_per_cpu_s": round(total / cpu_seconds),
        "mb_per_s": round(size / seconds / 1e6, 1), "verify_seconds": round(verify_seconds, 3),
        "verify_ok": not problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="samples per run (rounded down to 10 classes)")
    parser.add_argument("--shard-size", type=int, nargs="+", default=[10_000], help="shard sizes to try")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[256], help="teacher batch sizes to try")
    parser.add_argument("--z-dim", type=int, default=512, help="latent size")
    parser.add_argument("--resolution", type=int, default=32, help="image side")
    parser.add_argument("--tmp", default=None, help="folder for the sets (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting; the best is kept")
    parser.add_argument("--results", default=str(RESULTS), help="JSON file for the results")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="store-bench-") as tmp:
        for shard_size in args.shard_size:
            for batch_size in args.batch_size:
                runs = [run_one(args.count, shard_size, batch_size, args.z_dim, args.resolution, Path(tmp))
                        for _ in range(args.repeat)]
                rows.append(max(runs, key=lambda r: r["samples_per_s"]))

    print(f"{'samples':>8} {'shard':>6} {'batch':>6} {'seconds':>8} {'samples/s':>10} {'MB/s':>7} "
          f"{'cpu s':>6} {'samples/cpu-s':>13} {'verify s':>9} ok")
    for r in rows:
        print(f"{r['samples']:>8} {r['shard_size']:>6} {r['batch_size']:>6} {r['seconds']:>8.2f} "
              f"{r['samples_per_s']:>10} {r['mb_per_s']:>7} {r['cpu_seconds']:>6.2f} {r['samples_per_cpu_s']:>13} "
              f"{r['verify_seconds']:>9.2f} {r['verify_ok']}")
    # Wall-clock rates depend on what else runs: the load average says how busy the machine was.
    machine = {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "load_avg": os.getloadavg(),
               "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}
    atomic_write_json(args.results, {"benchmark": "store_write", "machine": machine, "results": rows})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
