"""Inception feature speed and parity of every backend, in one run, on the same images.

    .venv/bin/python bench/fid_speed.py [--n 128] [--parity-n 2000] [--threads 1] [--batch-size 32]
    .venv/bin/python bench/fid_speed.py --n 32 --parity-n 100        # a quick run

Speed: ``--n`` CIFAR-10 train JPEGs (decoded once) go through ``extract()`` of today's path and the
new ones, batch by batch *interleaved* so that a change in the load of this shared machine hits every
backend alike; ms/image is the median over batches (wall and CPU time), the ratio is against today's
path. Today's path (``torch:fp32:grid-sample``) is the torch backend with the preprocessing as it was
before issue 15 (``grid_sample`` on the 299x299 tensor, then four elementwise passes), reproduced
here; the other backends use the current preprocessing (the same resize weights as two matrix
products, the scaling on the 32x32 input).

Parity: FID and KID between ``--parity-n`` class-balanced CIFAR-10 train images and as many test
images (``open_dataset`` on the JPEG zip), per backend, against torch fp32: FID relative difference
(target <= 0.1 % for reported figures), KID absolute difference, max feature error; "mixed" is the
backend's test features against torch fp32 train features (a run scored against a stats file made
with torch). Features are cached under runs/fid_speed/ (git-ignored) so a rerun costs nothing.

Writes bench/results/fid_speed.json with the machine facts (lscpu model, bf16/AMX flags, load
average, date, command).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BASE = ("torch", "fp32", "grid-sample")  # today's path: the one every ratio and difference is measured against
CACHE = ROOT / "runs" / "fid_speed"
LEGACY_RESIZE = "nv_bilinear_float 299x299 (affine_grid+grid_sample, border), (x-128)/128"


def legacy_preprocess(batch_uint8_nhwc: np.ndarray, device: str = "cpu"):
    """The preprocessing of today's path, as distilgan ran it before issue 15 (fid-helper's op order)."""
    import torch

    from distilgan.metrics import network

    x = torch.from_numpy(np.ascontiguousarray(batch_uint8_nhwc)).to(device).permute(0, 3, 1, 2).float()
    if x.shape[2] != network.INCEPTION_SIZE or x.shape[3] != network.INCEPTION_SIZE:
        x = network._nv_bilinear_grid_sample(x, network.INCEPTION_SIZE)
    x = (x / 255.0).clamp(0, 1)
    low, high = network.TF_INPUT_RANGE
    return (x * (high - low) + low).clamp(low, high)


class Backend:
    """A feature network and the preprocessing it runs with (``extract`` reads ``network.preprocess``)."""

    def __init__(self, spec: tuple[str, ...]) -> None:
        from distilgan.metrics.network import load_network

        self.net = load_network(backend=spec[0], precision=spec[1])
        self.legacy = len(spec) > 2 and spec[2] == "grid-sample"

    def describe(self) -> dict:
        info = self.net.describe()
        return {**info, "resize": LEGACY_RESIZE} if self.legacy else info

    def extract(self, images: np.ndarray, **kwargs) -> np.ndarray:
        from distilgan.metrics import network

        current = network.preprocess
        network.preprocess = legacy_preprocess if self.legacy else current
        try:
            return network.extract(self.net, images, **kwargs)[0]
        finally:
            network.preprocess = current


def machine_facts() -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in lscpu.splitlines() if line.startswith("Flags")), [])
    return {"cpu_model": model, "cpu_count": os.cpu_count(),
            "bf16_amx_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]), "python": platform.python_version(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}  # set: an ISA cap emulating another CPU


def balanced(dataset, n: int, seed: int = 0):
    """n images, n // classes from every class (seeded), kept in dataset order."""
    rng = np.random.default_rng(seed)
    per = n // dataset.num_classes
    chosen = [rng.choice(np.flatnonzero(dataset.labels == c), per, replace=False) for c in range(dataset.num_classes)]
    return dataset.subset(np.sort(np.concatenate(chosen)))


def features_cached(backend: Backend, key: str, images: np.ndarray, batch_size: int, desc: str) -> tuple[np.ndarray, float, bool]:
    """(features, seconds, from cache): parity features of one backend, cached under runs/."""
    from distilgan.utils.atomic import atomic_path

    file = CACHE / f"{key}.npz"
    if file.is_file():
        with np.load(file) as data:
            return data["features"], float(data["seconds"]), True
    start = time.perf_counter()
    feats = backend.extract(images, batch_size=batch_size, desc=desc)
    seconds = time.perf_counter() - start
    with atomic_path(file) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, features=feats, seconds=np.float64(seconds))
    return feats, seconds, False


def speed(networks: dict, images: np.ndarray, batch_size: int) -> dict:
    """Median wall and CPU ms/image per backend, batches interleaved across backends."""
    for net in networks.values():  # warm-up: TorchScript's profiling runs, OpenVINO's first inference
        net.extract(images[:batch_size], batch_size=batch_size, progress=False)
    wall = {k: [] for k in networks}
    cpu = {k: [] for k in networks}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        for key, net in networks.items():
            w, c = time.perf_counter(), time.process_time()
            net.extract(batch, batch_size=batch_size, progress=False)
            wall[key].append(1000 * (time.perf_counter() - w) / len(batch))
            cpu[key].append(1000 * (time.process_time() - c) / len(batch))
    return {k: {"ms_per_image_wall": round(float(np.median(wall[k])), 2), "ms_per_image_cpu": round(float(np.median(cpu[k])), 2),
                "batches": len(wall[k])} for k in networks}


def main() -> int:
    import torch

    from distilgan.data.datasets import open_dataset
    from distilgan.metrics.fid import fid_between_features
    from distilgan.metrics.kid import kernel_inception_distance
    from distilgan.utils.atomic import atomic_write_json
    from distilgan.utils.shared_data import shared_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images to time per backend (default: 128)")
    parser.add_argument("--parity-n", type=int, default=2000, help="train and test images each for the parity table; 0 skips it")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenVINO CPU threads (default: 1)")
    parser.add_argument("--backends", nargs="+", default=["torch:fp32", "openvino:fp32", "openvino:bf16"],
                        help="backend:precision[:grid-sample] besides today's path, torch:fp32:grid-sample (always run)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fid_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zip_path = shared_path("datasets", "cifar10", "cifar10-jpeg.zip")
    if zip_path is None:
        print("../shared/datasets/cifar10/cifar10-jpeg.zip not found (set DISTILGAN_SHARED)", file=sys.stderr)
        return 2
    kinds = [tuple(b.split(":")) for b in args.backends]
    if BASE not in kinds:
        kinds.insert(0, BASE)
    facts = machine_facts()
    networks = {" ".join(k): Backend(k) for k in kinds}
    base_key = " ".join(BASE)
    result: dict = {"machine": facts, "threads": args.threads, "batch_size": args.batch_size, "torch": torch.__version__,
                    "networks": {k: n.describe() for k, n in networks.items()}}

    t0 = time.perf_counter()
    train = open_dataset(zip_path, "train")
    test = open_dataset(zip_path, "test") if args.parity_n else None
    result["seconds_jpeg_decode_train_split"] = round(time.perf_counter() - t0, 1)
    speed_images = train.take(min(args.n, len(train)), seed=0).images
    print(f"speed: {len(speed_images)} images, batch {args.batch_size}, {args.threads} thread(s), load {facts['loadavg']}", flush=True)
    timing = speed(networks, speed_images, args.batch_size)
    base_ms = timing[base_key]["ms_per_image_wall"]
    base_cpu = timing[base_key]["ms_per_image_cpu"]
    for row in timing.values():
        row["speedup_wall"] = round(base_ms / row["ms_per_image_wall"], 2)
        row["speedup_cpu"] = round(base_cpu / row["ms_per_image_cpu"], 2)
    result["speed"] = {"n_images": len(speed_images), **timing}
    print(f"\n{'backend':<24}{'ms/img wall':>12}{'ms/img CPU':>12}{'x wall':>8}{'x CPU':>8}")
    for key, row in timing.items():
        print(f"{key:<24}{row['ms_per_image_wall']:>12.1f}{row['ms_per_image_cpu']:>12.1f}{row['speedup_wall']:>8.2f}{row['speedup_cpu']:>8.2f}")
    atomic_write_json(args.out, {**result, "partial": True})

    if args.parity_n:
        sets = {"train": balanced(train, args.parity_n), "test": balanced(test, args.parity_n)}
        feats, seconds = {}, {}
        for key, net in networks.items():
            for split, ds in sets.items():
                # the key of today's path is the one its features were cached under before the rename
                old_key = "torch fp32" if key == base_key else key
                tag = hashlib.sha256(f"{old_key}|{net.net.sha256}|{ds.fingerprint()}|{net.describe()}".encode()).hexdigest()[:16]
                feats[key, split], sec, hit = features_cached(net, f"{old_key.replace(' ', '-')}-{split}-{len(ds)}-{tag}",
                                                              ds.images, args.batch_size, f"{key} {split}")
                seconds[key, split] = {"seconds": round(sec, 1), "from_cache": hit}
                print(f"parity features {key} {split}: {len(ds)} images, {sec:.0f} s{' (cached)' if hit else ''}", flush=True)
        fid0 = fid_between_features(feats[base_key, "train"], feats[base_key, "test"])
        kid0 = kernel_inception_distance(feats[base_key, "train"], feats[base_key, "test"], seed=0)["kid"]
        parity = {}
        for key in networks:
            train_f, test_f = feats[key, "train"], feats[key, "test"]
            both = np.concatenate([train_f, test_f]) - np.concatenate([feats[base_key, "train"], feats[base_key, "test"]])
            ref = np.concatenate([feats[base_key, "train"], feats[base_key, "test"]])
            fid = fid_between_features(train_f, test_f)
            kid = kernel_inception_distance(train_f, test_f, seed=0)["kid"]
            mixed = fid_between_features(feats[base_key, "train"], test_f)
            parity[key] = {
                "fid": fid, "fid_rel_diff": abs(fid - fid0) / fid0, "kid": kid, "kid_abs_diff": abs(kid - kid0),
                "fid_mixed_vs_torch_train": mixed, "fid_mixed_rel_diff": abs(mixed - fid0) / fid0,
                "max_abs_feature_error": float(np.abs(both).max()), "max_abs_feature": float(np.abs(ref).max()),
                "max_rel_feature_error_per_image": float((np.linalg.norm(both, axis=1) / np.linalg.norm(ref, axis=1)).max()),
                "within_0.1_percent": abs(fid - fid0) / fid0 <= 1e-3,
                "feature_seconds": {s: seconds[key, s] for s in sets},
            }
        result["parity"] = {"n_train": len(sets["train"]), "n_test": len(sets["test"]),
                            "selection": "class-balanced, n/10 per class, numpy default_rng(0)", "vs": base_key, **parity}
        print(f"\nFID/KID {len(sets['train'])} train vs {len(sets['test'])} test (CIFAR-10 JPEG copy), against {base_key}")
        print(f"{'backend':<24}{'FID':>10}{'rel diff':>10}{'KID':>10}{'KID diff':>10}{'mixed rel':>11}{'max rel feat':>14}")
        for key, row in parity.items():
            print(f"{key:<24}{row['fid']:>10.4f}{row['fid_rel_diff']:>10.2e}{row['kid']:>10.5f}{row['kid_abs_diff']:>10.1e}"
                  f"{row['fid_mixed_rel_diff']:>11.2e}{row['max_rel_feature_error_per_image']:>14.2e}")
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_json(args.out, {**result, "partial": False})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
