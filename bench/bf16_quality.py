"""Does bf16 autocast keep the student's training quality? Two `distilgan distill` runs from the same
seed and store, --precision fp32 and --precision bf16, compared on the pixel and feature L1 terms at
the end (mean of the last ``--tail`` logged steps) and on wall / CPU time (issue 15's acceptance:
within 3 %).

    python bench/bf16_quality.py --data runs/sets/c10-embedded-20k [--steps 500] [--out runs/bf16-quality]

Runs go to OUT/fp32 and OUT/bf16 (resumable: a finished run is reused); prints a table and writes
bench/results/bf16_quality.json with the machine, load and command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_facts  # noqa: E402

from distilgan.utils.atomic import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bf16_quality.json"
TERMS = ("g/pixel", "g/feature", "d/total")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="distillation set")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--tail", type=int, default=50, help="logged steps averaged at the end (default 50)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("runs/bf16-quality"))
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    from distilgan.train.logging import read_log
    load_start = os.getloadavg()
    rows = {}
    for precision in ("fp32", "bf16"):
        run = args.out / precision
        command = [sys.executable, "-m", "distilgan", "distill", "--data", args.data, "--out", str(run),
                   "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--precision", precision,
                   "--log-every", "1", "--workers", "0", "--seed", "0", "--ckpt-every-minutes", "5"]
        state = run / "state" / "state.pt"
        if state.exists():
            command.append("--resume")
        started = time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        log = read_log(run)
        tail = log[-args.tail:]
        rows[precision] = {"steps": log[-1]["step"], "wall_s": round(time.time() - started, 1),
                           **{term: sum(r[term] for r in tail) / len(tail) for term in TERMS},
                           "cpu_s_per_sample": sum(r.get("cpu_s_per_sample", 0.0) for r in log) / len(log)}
    differences = {term: rows["bf16"][term] / rows["fp32"][term] - 1.0 for term in TERMS}
    print(f"{'':6} " + " ".join(f"{t:>12}" for t in TERMS) + f" {'CPU-ms/sample':>14}")
    for precision, row in rows.items():
        print(f"{precision:6} " + " ".join(f"{row[t]:12.5f}" for t in TERMS) + f" {row['cpu_s_per_sample'] * 1e3:14.2f}")
    print("bf16/fp32 - 1  " + " ".join(f"{differences[t]:+11.2%}" for t in TERMS))
    ok = all(abs(differences[t]) <= 0.03 for t in ("g/pixel", "g/feature"))
    print(f"pixel and feature L1 within 3 %: {'yes' if ok else 'no'}")
    result = {"benchmark": "bf16_quality", "data": args.data, "steps": args.steps, "tail": args.tail,
              "batch_size": args.batch_size, "rows": rows, "relative_difference": differences, "within_3_percent": ok,
              "machine": {**machine_facts(), "load_average_start": load_start, "load_average_end": os.getloadavg()},
              "command": " ".join(["python", *sys.argv])}
    atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
