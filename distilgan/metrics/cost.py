"""What a long evaluation will cost on this machine, measured with a short timed probe.

On a CPU, Inception features cost about 0.1 s per image, so ``eval --n 50000`` or ``bench``'s
10,000-sample FIDs take hours; the commands say so (with the option that shortens them) before
they start. The probe is a few images through the same network (and generator) the run will use,
after one warm-up call, so the figure includes this machine's current load.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

PROBE_IMAGES = 16
LONG_SECONDS = 60.0  # below this nothing is announced


def _timed(call: Callable[[], Any], count: int) -> float:
    call()  # warm-up: first calls pay one-time allocation and kernel selection
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) / count


def inception_seconds_per_image(network: Any, probe: int = PROBE_IMAGES) -> float:
    """Seconds per image of :func:`distilgan.metrics.network.extract` with ``network``."""
    from distilgan.metrics.network import extract

    images = np.random.default_rng(0).integers(0, 256, (probe, 32, 32, 3), dtype=np.uint8)
    return _timed(lambda: extract(network, images, batch_size=probe, progress=False), probe)


def generator_seconds_per_image(forward: Callable[[np.ndarray, np.ndarray], Any], z_dim: int, label: int,
                                probe: int = PROBE_IMAGES) -> float:
    """Seconds per image of ``forward(z, labels)`` at batch ``probe``."""
    z = np.random.default_rng(0).standard_normal((probe, z_dim)).astype(np.float32)
    labels = np.full(probe, label, dtype=np.int64)
    return _timed(lambda: forward(z, labels), probe)


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min': rounded the way a person plans around."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, rest = divmod(int(round(minutes)), 60)
    return f"{hours} h {rest:02d} min"


# The sample count below which FID/KID/PR figures are not comparable with published ones (FID's
# bias grows as n shrinks; papers use 10,000 or 50,000).
PROTOCOL_MIN_N = 10_000
SAMPLE_METRICS = ("fid", "kid", "pr", "ifid", "fidelity")


def announce_eval(n: int, metrics: list[str], network: Any, device: str, forward: Callable | None = None,
                  z_dim: int | None = None, label: int = 0) -> None:
    """Before an evaluation starts: a note when ``n`` is below the protocol, and on a CPU a note
    with the expected time of a long run and the option that shortens it."""
    from distilgan.utils.progress import note

    if n < PROTOCOL_MIN_N and any(m in SAMPLE_METRICS for m in metrics):
        note(f"{n:,} samples is below the protocol's {PROTOCOL_MIN_N:,}: FID, KID and precision/recall at this size "
             f"are biased and not comparable with published figures (use --n {PROTOCOL_MIN_N} or more for those)")
    if not str(device).startswith("cpu") or n < 2000:  # a small run is over before a probe would pay off
        return
    per_image = inception_seconds_per_image(network)
    if forward is not None and z_dim is not None:
        per_image += generator_seconds_per_image(forward, z_dim, label)
    total = per_image * n
    if total >= LONG_SECONDS:
        shorter = PROTOCOL_MIN_N if n > PROTOCOL_MIN_N else max(1000, n // 5)
        note(f"{n:,} samples will take about {format_duration(total)} on this machine ({per_image:.3f} s per image "
             f"measured); --n {shorter} takes about {format_duration(per_image * shorter)}, or use --device cuda")


def announce_bench_fid(fid_samples: int, passes: int, network: Any) -> None:
    """``bench``: the expected time of its FIDs (``passes`` feature runs of ``fid_samples`` images)."""
    from distilgan.utils.progress import note

    if fid_samples <= 0 or passes <= 0:
        return
    per_image = inception_seconds_per_image(network)
    total = per_image * fid_samples * passes
    if total >= LONG_SECONDS:
        note(f"FID on {fid_samples:,} samples x {passes} feature passes will take about {format_duration(total)} on this "
             f"machine ({per_image:.3f} s per image measured); --fid-samples 1000 takes about "
             f"{format_duration(per_image * 1000 * passes)}, --fid-variants NAMES limits it to some variants, "
             f"--fid-samples 0 skips it")


__all__ = ["LONG_SECONDS", "PROBE_IMAGES", "PROTOCOL_MIN_N", "announce_bench_fid", "announce_eval", "format_duration",
           "generator_seconds_per_image", "inception_seconds_per_image"]
