"""Which generator to ship: raw G, the EMA copy with BN statistics copied from G (distilgan before issue
14), the EMA copy with averaged statistics (``ema_buffers: average``), and the EMA copy with statistics
re-estimated on its own outputs (``recompute``), all from one training state, scored by KID and FID.

    python bench/ema_bn.py runs/recipe-30min [--n 500] [--ref STORE_OR_DATASET] [--json OUT.json]

Uses the run's in-loop metric protocol (fixed class-balanced z from the run's seed, the run's z
distribution, reference = the run's store unless --ref), so figures compare with its metrics.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_facts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=500, help="samples per variant and reference images (default 500)")
    parser.add_argument("--ref", default=None, help="reference (default: the run's store)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import yaml

    from distilgan.store import DistillationStore
    from distilgan.models import DiStyleGANGenerator
    from distilgan.train.ema import batchnorm_layers, recompute_batchnorm
    from distilgan.train.loop_metrics import LoopMetrics, reference_loader
    from distilgan.train.state import load_state
    from distilgan.train.training_loop import BN_BATCHES, BN_STREAM
    from distilgan.utils.noise import ZDistribution, rng

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    state = load_state(args.run / "state" / "state.pt")
    store = DistillationStore.open(config["data"])
    z_dist = ZDistribution.from_dict(store.manifest.get("z_distribution"))

    def build() -> torch.nn.Module:
        return DiStyleGANGenerator(z_dim=store.z_dim, num_classes=store.num_classes, project_dim=config["project_dim"],
                                   ngf=config["ngf"], resolution=store.resolution, channels=store.channels)

    raw = build()
    raw.load_state_dict(state["generator"])
    ema_avg = build()
    ema_avg.load_state_dict(state["ema"]["model"])
    ema_copy = copy.deepcopy(ema_avg)  # EMA weights, the raw G's BN statistics: what was shipped before
    for target, source in zip(batchnorm_layers(ema_copy), batchnorm_layers(raw)):
        target.running_mean.copy_(source.running_mean)
        target.running_var.copy_(source.running_var)
    batch = int(config["batch_size"])
    classes = np.asarray(store.classes)

    def draw(i: int):
        z = z_dist.sample(rng(int(config["seed"]), BN_STREAM, i), batch, store.z_dim)
        return torch.from_numpy(z), torch.from_numpy(classes[(np.arange(batch) + i * batch) % len(classes)])

    ema_recomputed = recompute_batchnorm(ema_avg, draw, BN_BATCHES)
    variants = {"raw G": raw, "EMA, BN copied from G (before)": ema_copy, "EMA, BN averaged": ema_avg,
                "EMA, BN re-estimated": ema_recomputed}

    metrics = LoopMetrics(["kid", "fid"], args.n, args.run, reference_loader(args.ref or config["data"], args.n, 0),
                          lambda g, n: z_dist.sample(g, n, store.z_dim), store.classes, int(config["seed"]),
                          torch.device("cpu"))
    rows = []
    for name, model in variants.items():
        metrics.best = None
        record = metrics.evaluate(model.eval(), int(state["step"]), int(state["epoch"]), 0)
        rows.append({"variant": name, "kid": record["kid"], "kid_std": record["kid_std"], "fid": record["fid"],
                     "seconds": record["seconds"]})
        print(f"{name:34s} KID {record['kid']:.5f} ± {record['kid_std']:.5f}   FID {record['fid']:8.3f}", flush=True)
    result = {"run": str(args.run), "step": int(state["step"]), "epoch": int(state["epoch"]),
              "protocol": {**record["protocol"], "variants_share": "the same z, labels and reference"},
              "rows": rows, "machine": machine_facts(), "command": " ".join(["python", *sys.argv])}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
