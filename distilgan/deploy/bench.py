"""Benchmark exported variants of one student (a generator or an image translator): latency,
throughput, size, MACs, quality, peak rates.

Timing: untimed warm-up calls (at least 5, and ``min_seconds`` / 2), then timed calls of the same
fixed inputs (at least ``repeats``, and for at least ``min_seconds``, default 2 s); we report
the median and the interquartile range (IQR = q3 - q1) in milliseconds. Latency is at batch 1,
throughput at the largest batch (images/s = batch / median seconds). OpenVINO models are compiled
for each batch size (static shapes, PERFORMANCE_HINT=LATENCY, INFERENCE_NUM_THREADS=threads,
INFERENCE_PRECISION_HINT=f32 unless the variant says bf16-compute);
onnxruntime gets intra_op_num_threads=threads; torch gets set_num_threads(threads).

Quality of every variant against the FP32 PyTorch student on the same inputs (a generator: z of seed
0, balanced labels; a translator: the source images of ``calib_data``'s pairs with their edits, else
synthetic images with balanced edits, translator_inputs.py): PSNR and mean |error| on uint8 images (cheap, every sample), and FID between the
variant's images and the FP32 student's images (``fid_samples`` of them; Inception features from
``distilgan.metrics``). FID needs the Inception network on every image, which is slow on a CPU.

Physical reference (``peak.peak_rates``): dense micro-benchmarks on this machine, a stack of four
256->256 3x3 convolutions on 16x16 maps at batch 64 (the student's own layer shape) in torch FP32,
OpenVINO FP32 and OpenVINO INT8 (NNCF-quantised), plus a torch FP32 1024^3 matmul. Each variant's
achieved rate (2 * MACs * images/s) is given as a fraction of the peak of its arithmetic.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.deploy import GENERATOR
from distilgan.errors import UserError
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
from distilgan.utils.energy import CostMeter
from distilgan.utils.latent import model_classes, model_z_distribution
from distilgan.utils.noise import balanced_labels, rng, sample_z

QUALITY_SEED = 0
BENCH_STREAM = 7010


def time_fn(fn: Callable[[], Any], warmup: int = 3, repeats: int = 20, min_seconds: float = 0.0) -> dict[str, float]:
    """Median and IQR (ms) of timed calls after untimed warm-up ones.

    At least ``warmup`` / ``repeats`` calls, and with ``min_seconds`` > 0 at least that long for each
    phase: a sub-millisecond call needs hundreds of repeats (and the first calls after compiling are
    slow: memory allocation, caches), as OpenVINO's benchmark_app's time-based runs assume.
    """
    start = time.perf_counter()
    calls = 0
    while calls < warmup or time.perf_counter() - start < min_seconds / 2:
        fn()
        calls += 1
    times: list[float] = []
    meter = CostMeter()  # what the timed calls cost the machine: CPU time (all threads), RAPL joules
    began = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - began < min_seconds and len(times) < 100_000):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    cost = meter.per_item(len(times))
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(q3 - q1), "q1_ms": float(q1), "q3_ms": float(q3),
            "repeats": len(times), "warmup_calls": calls, "cpu_s_per_call": cost["cpu_s_per_item"],
            "joules_per_call": cost["joules_per_item"]}


def torch_runner(model: Any, threads: int) -> Callable[[int], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    import torch

    torch.set_num_threads(threads)

    def for_batch(_: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def run(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(z), torch.from_numpy(labels)).numpy()

        return run

    return for_batch


def export_runner(path: Path, threads: int, inference_precision: str = "f32") -> Callable[[int], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    from distilgan.deploy.runtime import open_export

    cache: dict[int, Any] = {}

    def for_batch(batch: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        if batch not in cache:
            cache[batch] = open_export(path, threads=threads, batch=batch, inference_precision=inference_precision).run
        return cache[batch]

    return for_batch


def generate_all(run_for: Callable[[int], Callable], z: np.ndarray, labels: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 NHWC images for all inputs (z and labels; a translator's images and edits), ``batch`` at a time."""
    run = run_for(batch)
    parts = []
    for start in range(0, len(z), batch):
        parts.append(nchw_to_nhwc(float_to_uint8(run(z[start : start + batch], labels[start : start + batch]))))
    return np.concatenate(parts)


def pixel_quality(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    diff = images.astype(np.float64) - reference.astype(np.float64)
    mse = float((diff**2).mean())
    return {"mean_abs_uint8": float(np.abs(diff).mean()), "psnr_db": float("inf") if mse == 0 else 10 * np.log10(255**2 / mse),
            "identical_images": int((np.abs(diff).reshape(len(diff), -1).max(1) == 0).sum())}


def time_variant(run_for: Callable[[int], Callable], inputs_for: Callable[[int], tuple[np.ndarray, np.ndarray]],
                 batches: list[int], repeats: int, min_seconds: float = 2.0) -> dict[str, Any]:
    """Timings at every batch size, on the fixed inputs ``inputs_for(batch)`` gives."""
    timings = {}
    for batch in batches:
        first, second = inputs_for(batch)
        run = run_for(batch)
        timing = time_fn(lambda: run(first, second), warmup=5, repeats=repeats, min_seconds=min_seconds)
        timing["images_per_s"] = batch / timing["median_ms"] * 1e3
        timing["cpu_s_per_image"] = timing["cpu_s_per_call"] / batch
        joules = timing["joules_per_call"]
        timing["joules_per_image"] = joules / batch if isinstance(joules, float) else joules
        timings[str(batch)] = timing
    return timings


def bench_inputs(model: Any, facts: dict[str, Any], calib_data: str | None) -> tuple[Callable, Callable]:
    """(timing inputs for a batch size, quality inputs for n samples) of either kind of model."""
    if facts["kind"] == GENERATOR:
        def timing(batch: int) -> tuple[np.ndarray, np.ndarray]:
            return (sample_z(rng(QUALITY_SEED, BENCH_STREAM, batch), batch, model.z_dim),
                    balanced_labels(0, batch, range(model.num_classes)))

        def quality(n: int) -> tuple[np.ndarray, np.ndarray]:
            # the inputs the model is used with: its own z distribution and classes
            return (model_z_distribution(model).sample(rng(QUALITY_SEED), n, model.z_dim),
                    balanced_labels(0, n, model_classes(model)))

        return timing, quality
    from distilgan.deploy.translator_inputs import translator_inputs

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        # pair sources when given (fewer than n if the set is small), else synthetic images
        return translator_inputs(facts, n, QUALITY_SEED, calib_data).arrays()

    def timing_images(batch: int) -> tuple[np.ndarray, np.ndarray]:
        first, second = images(batch)
        rows = np.arange(batch) % len(first)  # exactly one batch, repeating a small pair set
        return first[rows], second[rows]

    return timing_images, images


def variant_size(path: Path | None, checkpoint: Path | None) -> int:
    if path is not None:
        return sum(p.stat().st_size for p in path.iterdir() if p.name.startswith("model."))
    return (checkpoint / "model.safetensors").stat().st_size if checkpoint else 0


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fid_features(images: np.ndarray, network: Any) -> np.ndarray:
    from distilgan.metrics.network import extract

    return extract(network, images, batch_size=64, progress=True, desc="FID features")[0]


def _joules(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "not readable"


def markdown_table(rows: list[dict[str, Any]], batches: list[int]) -> str:
    small, large = str(min(batches)), str(max(batches))
    head = (f"| variant | latency b{small} ms (IQR) | throughput b{large} img/s | speed-up vs torch fp32 | "
            f"CPU-ms/img b{large} | J/img b{large} | size MB | params | MMACs/img | % of peak | PSNR dB | FID vs fp32 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        lat, thr = row["timing"].get(small), row["timing"].get(large)
        fid = row.get("fid_vs_fp32")
        speedup, peak = row.get("speedup_vs_torch_fp32"), row.get("fraction_of_peak")
        lines.append(
            f"| {row['name']} | {lat['median_ms']:.3f} ({lat['iqr_ms']:.3f}) | {thr['images_per_s']:.0f} | "
            f"{'-' if speedup is None else f'{speedup:.2f}x'} | {thr['cpu_s_per_image'] * 1e3:.3f} | "
            f"{_joules(thr['joules_per_image'])} | {row['size_bytes'] / 1e6:.2f} | {row['params']:,} | "
            f"{row['macs_per_image'] / 1e6:.1f} | {'-' if peak is None else f'{peak:.1%}'} | "
            f"{row['quality']['psnr_db']:.1f} | {'-' if fid is None else f'{fid:.3f}'} |"
        )
    return "\n".join(lines)


def extra_name(path: Path, info: dict[str, Any]) -> str:
    """The table name of an ``--extra`` export folder."""
    return f"{info.get('source', {}).get('derived_by', path.name)} {info['format']} {info['precision']}"


def planned_names(backends: list[str], precisions: list[str], plan: list[tuple[str, str, bool, bool]], ablation: bool,
                  extras: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The variant names of the table, in its order, known before anything is exported."""
    names = ["torch fp32 (eager)"] if "torch" in backends and "fp32" in precisions else []
    for backend, precision, first, last in plan:
        suffix = ("-keep-first" if first else "") + ("-keep-last" if last else "")
        names.append(f"{backend} {precision}{suffix}")
        if ablation and backend == "openvino" and not suffix and precision in ("fp32", "int8"):
            names.append(f"openvino {precision} bf16-compute")
    return names + [extra_name(path, info) for path, info in extras]


def run_bench(
    checkpoint: str,
    backends: list[str],
    precisions: list[str],
    batches: list[int],
    threads: int = 2,
    fid_samples: int = 10000,
    quality_samples: int = 10000,
    repeats: int = 20,
    extra: list[str] | None = None,
    ablation: bool = False,
    calibration_size: int = 512,
    peak: bool = True,
    workdir: str | None = None,
    fid_for: list[str] | None = None,
    min_seconds: float = 2.0,
    calib_data: str | None = None,
) -> dict[str, Any]:
    """Export every (backend, precision), time it, measure quality against the FP32 student.

    ``fid_for``: names of the variants (as in the table) that get an FID (each costs ``fid_samples`` Inception
    passes, ~20 minutes per 10,000 on this 2-core CPU); empty means all.
    ``calib_data``: a translator's pair set: its sources calibrate the int8 variants and feed the timing
    and quality comparisons.
    """
    import torch

    from distilgan.deploy.export import check_calib_data, export_model, load_exportable, model_facts
    from distilgan.deploy.runtime import read_export_info
    from distilgan.models import resolve_checkpoint
    from distilgan.utils.hashing import sha256_tree

    folder = resolve_checkpoint(checkpoint)
    model = load_exportable(folder)
    facts = model_facts(model)
    # before any export: int8 of a translator needs a pair set, a generator takes none
    int8 = ("int8" in precisions or ablation) and any(b != "torch" for b in backends)  # ablation adds int8 variants
    check_calib_data(facts["kind"], int8, calib_data, bench=True)
    timing_inputs, quality_inputs = bench_inputs(model, facts, calib_data)
    torch.set_num_threads(threads)
    result: dict[str, Any] = {"checkpoint": str(folder), "fingerprint": sha256_tree(folder), "threads": threads,
                              "batches": batches, "repeats": repeats, "min_seconds": min_seconds, "load_avg_before": load_avg(),
                              "cpu_count": os.cpu_count(), "model": facts}
    scratch = tempfile.TemporaryDirectory(prefix="distilgan-bench-") if workdir is None else None
    root = Path(workdir or scratch.name)  # type: ignore[union-attr]
    variants: list[tuple[str, Callable, Path | None, dict[str, Any]]] = []
    plan = [(b, p, False, False) for b in backends if b != "torch" for p in precisions]
    if ablation and "openvino" in backends:
        plan += [("openvino", "int8", True, False), ("openvino", "int8", False, True), ("openvino", "int8", True, True)]
    extras = [read_export_info(path_text) for path_text in extra or []]
    for path, info in extras:
        if info["kind"] != facts["kind"]:
            raise UserError(f"--extra {path} is an exported {info['kind']}, but --checkpoint is a {facts['kind']} (give exports of this model)")
    # Check --fid-variants against the names the table will have before any export (minutes of work).
    names = planned_names(backends, precisions, plan, ablation, extras)
    unknown = sorted(set(fid_for or []) - set(names))
    if unknown:  # a typo would silently give no FID after an hour of work
        raise UserError(f"--fid-variants names no variant: {', '.join(unknown)} (variants: {'; '.join(names)})")
    network = None
    if fid_samples > 0:
        from distilgan.metrics.cost import announce_bench_fid
        from distilgan.metrics.network import load_network

        network = load_network()
        with_fid = [n for n in names if (not fid_for or n in fid_for) and not n.startswith("torch fp32")]
        announce_bench_fid(fid_samples, 1 + len(with_fid), network)  # + 1: the FP32 reference's features
    if "torch" in backends and "fp32" in precisions:
        variants.append(("torch fp32 (eager)", torch_runner(model, threads), None, facts))
    for backend, precision, first, last in plan:
        fmt = "openvino" if backend == "openvino" else "onnx"
        suffix = ("-keep-first" if first else "") + ("-keep-last" if last else "")
        path = root / f"{backend}-{precision}{suffix}"
        export_model(model, path, fmt=fmt, precision=precision, calibration_size=calibration_size,
                     keep_first=first, keep_last=last, calib_data=calib_data if precision == "int8" else None)
        variants.append((f"{backend} {precision}{suffix}", export_runner(path, threads), path, facts))
        if ablation and backend == "openvino" and not suffix and precision in ("fp32", "int8"):
            variants.append((f"openvino {precision} bf16-compute", export_runner(path, threads, "bf16"), path, facts))
    for path, info in extras:
        variants.append((extra_name(path, info), export_runner(path, threads), path, info))
    assert [name for name, *_ in variants] == names, "planned_names() must follow the export loop's order"

    # Every variant is timed first, back to back, so that the long quality work (10,000 samples per
    # variant, Inception features) neither warms nor loads the machine between timings.
    rows = []
    for name, run_for, path, info in variants:
        print(f"bench: timing {name}", flush=True)
        rows.append({"name": name, "path": str(path) if path else None, "load_avg": load_avg(),
                     "params": info["params"], "macs_per_image": info["macs_per_image"],
                     "size_bytes": variant_size(path, folder),
                     "timing": time_variant(run_for, timing_inputs, batches, repeats, min_seconds)})
    if peak:
        from distilgan.deploy.peak import peak_rates

        result["peak"] = peak_rates(threads)

    # a translator's pair set may hold fewer images than asked for: then all of them
    z, labels = quality_inputs(max(quality_samples, fid_samples))
    n_quality = len(z)
    quality_samples, fid_samples = min(quality_samples, n_quality), min(fid_samples, n_quality)
    reference = generate_all(torch_runner(model, threads), z, labels)
    ref_features = None
    if network is not None:
        ref_features = fid_features(reference[:fid_samples], network)
        if facts["kind"] == GENERATOR:
            inputs = {"labels": "balanced", "z_distribution": model_z_distribution(model).to_dict(),
                      "reference": "FP32 PyTorch student, same z and labels"}
        else:
            inputs = {"inputs": "pair-set sources" if calib_data else "synthetic images",
                      "reference": "FP32 PyTorch translator, same images and edits"}
        result["fid_protocol"] = {"network": network.describe(), "samples": fid_samples, "seed": QUALITY_SEED, **inputs}
    for row, (name, run_for, _, _) in zip(rows, variants):
        print(f"bench: quality {name}", flush=True)
        images = generate_all(run_for, z, labels)
        row["quality"] = pixel_quality(images[:quality_samples], reference[:quality_samples])
        row["quality"]["samples"] = min(quality_samples, n_quality)
        if network is not None and (not fid_for or name in fid_for):
            from distilgan.metrics.fid import fid_between_features

            same = np.array_equal(images[:fid_samples], reference[:fid_samples])
            row["fid_vs_fp32"] = 0.0 if same else fid_between_features(fid_features(images[:fid_samples], network), ref_features)
    base = next((r for r in rows if r["name"].startswith("torch fp32")), None)
    large = str(max(batches))
    for row in rows:
        if base is not None:
            row["speedup_vs_torch_fp32"] = row["timing"][large]["images_per_s"] / base["timing"][large]["images_per_s"]
        rate = 2 * row["macs_per_image"] * row["timing"][large]["images_per_s"] / 1e9
        row["achieved_gops"] = rate
        if "peak" in result and "peak_fp32_gflops" in result["peak"]:
            ceiling = result["peak"]["peak_int8_gops"] if "int8" in row["name"] else result["peak"]["peak_fp32_gflops"]
            row["fraction_of_peak"] = rate / ceiling
    result["variants"] = rows
    result["load_avg_after"] = load_avg()
    result["table"] = markdown_table(rows, batches)
    if scratch is not None:
        scratch.cleanup()
    return result
