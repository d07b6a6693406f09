"""Load test of ``distilgan serve`` on loopback: N requests at C concurrent -> errors, latency, req/s.

By default it starts its own server (``distilgan serve --port 0`` on 127.0.0.1) with a
reference-size DiStyleGAN generator (32x32, 10 classes, 2.05 M parameters, random weights: the
cost per image is what matters, not the pictures), then sends the requests from C threads, each
with its own keep-alive connection. ``--url`` points it at a server already running on this machine
instead; only loopback addresses are accepted.

    .venv/bin/python bench/serve_load.py                                 # 1,000 requests, 16 at a time
    .venv/bin/python bench/serve_load.py --checkpoint runs/cifar10/generator --workers 2
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 --payload '{"labels": [3], "count": 4}'

Prints a table and writes bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from distilgan.utils.atomic import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_PAYLOAD = {"count": 1, "format": "grid"}  # every class once: 10 images as one PNG grid
MAX_REQUESTS, MAX_CONCURRENCY = 100_000, 256  # bounded: this is a benchmark, not a flood


def reference_checkpoint(folder: Path) -> Path:
    import torch

    from distilgan.models import DiStyleGANGenerator

    torch.manual_seed(0)
    return DiStyleGANGenerator(class_names=CIFAR10).save_pretrained(folder / "reference-generator")


@contextlib.contextmanager
def own_server(checkpoint: Path, workers: int, max_count: int) -> Iterator[str]:
    """``distilgan serve`` in a subprocess on a free loopback port; yields its base URL."""
    command = [
        sys.executable, "-m", "distilgan", "serve", "--checkpoint", str(checkpoint), "--host", "127.0.0.1",
        "--port", "0", "--workers", str(workers), "--max-count", str(max_count), "--no-access-log",
        "--log-level", "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            match = re.search(r"serving on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
            elif not match:
                print(f"  server: {line.rstrip()}", file=sys.stderr)
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(120) or not found:
            raise SystemExit("the server did not start (see its output above)")
        yield found[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_healthy(host: str, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPConnection(host, port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"http://{host}:{port}/health did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def load(host: str, port: int, payload: dict, requests: int, concurrency: int) -> dict:
    """Send ``requests`` POST /generate from ``concurrency`` threads; per-request latency and status."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    latencies = np.zeros(requests)
    statuses = np.zeros(requests, dtype=np.int64)  # 0 = connection error
    generation_ms = np.full(requests, np.nan)
    next_index = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            start = time.perf_counter()
            try:
                connection.request("POST", "/generate", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                statuses[index] = response.status
                if response.getheader("X-Generation-Ms"):
                    generation_ms[index] = float(response.getheader("X-Generation-Ms"))
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
            latencies[index] = time.perf_counter() - start
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ok = statuses == 200
    milliseconds = latencies * 1000
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": int((~ok).sum()),
        "statuses": {str(s): int((statuses == s).sum()) for s in np.unique(statuses)},
        "seconds": round(seconds, 3),
        "requests_per_s": round(requests / seconds, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(milliseconds, 50)), 1),
            "p90": round(float(np.percentile(milliseconds, 90)), 1),
            "p99": round(float(np.percentile(milliseconds, 99)), 1),
            "max": round(float(milliseconds.max()), 1),
        },
        "server_generation_ms_mean": round(float(np.nanmean(generation_ms)), 2) if ok.any() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server on this machine (default: start one)")
    parser.add_argument("--checkpoint", help="checkpoint for the server it starts (default: reference-size random generator)")
    parser.add_argument("--requests", type=int, default=1000, help="requests to send (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    parser.add_argument("--payload", default=json.dumps(DEFAULT_PAYLOAD), help=f"JSON body of every request (default {json.dumps(DEFAULT_PAYLOAD)})")
    parser.add_argument("--workers", type=int, default=1, help="--workers of the server it starts (default 1)")
    parser.add_argument("--warmup", type=int, default=20, help="requests sent first and not counted (default 20)")
    parser.add_argument("--out", default=str(RESULTS), help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise SystemExit(f"--requests must be in 1..{MAX_REQUESTS} and --concurrency in 1..{MAX_CONCURRENCY}")
    payload = json.loads(args.payload)

    with contextlib.ExitStack() as stack:
        checkpoint = None
        if args.url:
            url = args.url.rstrip("/")
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve-load-")))
            checkpoint = Path(args.checkpoint) if args.checkpoint else reference_checkpoint(folder)
            url = stack.enter_context(own_server(checkpoint, args.workers, max_count=64))
        parsed = urlparse(url)
        if parsed.hostname not in LOOPBACK or parsed.port is None:
            raise SystemExit(f"--url must be http://127.0.0.1:PORT (loopback only), got {url}")
        wait_healthy(parsed.hostname, parsed.port)
        model = json.loads(_get(parsed.hostname, parsed.port, "/model"))
        load_before = os.getloadavg()
        if args.warmup:
            load(parsed.hostname, parsed.port, payload, args.warmup, min(args.concurrency, args.warmup))
        result = load(parsed.hostname, parsed.port, payload, args.requests, args.concurrency)
        load_after = os.getloadavg()

    record = {
        "benchmark": "serve_load",
        "url": url if args.url else "own server on 127.0.0.1",
        "server_workers": None if args.url else args.workers,
        "payload": payload,
        "model": {key: model.get(key) for key in ("architecture", "resolution", "num_classes", "parameters", "macs_per_image", "backend", "device")},
        "checkpoint": str(args.checkpoint) if args.checkpoint else ("reference-size random DiStyleGANGenerator" if not args.url else None),
        "result": result,
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in load_after],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "client and server share this machine's CPUs",
        },
    }
    atomic_write_json(args.out, record)
    latency = result["latency_ms"]
    print(f"{'requests':>8} {'conc':>5} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'gen ms':>7}")
    print(
        f"{result['requests']:>8} {result['concurrency']:>5} {result['errors']:>6} {result['requests_per_s']:>7} "
        f"{latency['p50']:>8} {latency['p90']:>8} {latency['p99']:>8} {latency['max']:>8} "
        f"{result['server_generation_ms_mean'] or float('nan'):>7}"
    )
    print(f"payload {json.dumps(payload)}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}; wrote {args.out}")


def _get(host: str, port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("GET", path)
    return connection.getresponse().read()


if __name__ == "__main__":
    main()
