"""``distilgan bench``: latency, throughput, size, MACs and quality of a student's (generator's or image
translator's) deployment variants."""

from __future__ import annotations

import argparse

from distilgan.utils import argtypes

BACKENDS = ("torch", "onnxruntime", "openvino")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark exported variants (speed, size, FID vs FP32)",
        description=(
            "Export the checkpoint for every backend and precision, then measure latency at the smallest "
            "batch and throughput at the largest (median and IQR of repeated timed calls after warm-up), "
            "size on disk, params, MACs, PSNR and FID of each variant against the FP32 PyTorch student on the "
            "same inputs (z and labels; a translator's images and edits), and this machine's measured peak FP32/INT8 "
            "rates. Prints a markdown table."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="generator or image-translator checkpoint folder, or a built-in name")
    parser.add_argument("--calib-data", metavar="PAIRS",
                        help="translators: a pair set whose source images (with their edits) calibrate the int8 "
                             "variants (required for int8) and feed timing and quality (default: synthetic images)")
    parser.add_argument("--backends", default="torch,onnxruntime,openvino", help="comma list of torch, onnxruntime, openvino")
    parser.add_argument("--precisions", default="fp32,fp16,int8", help="comma list of fp32, fp16, int8 (torch: fp32 only)")
    parser.add_argument("--batch", default="1,64", type=argtypes.positive_int_list, help="comma list of batch sizes (default 1,64)")
    parser.add_argument("--threads", type=argtypes.positive_int, default=2, help="CPU threads for every backend (default 2)")
    parser.add_argument("--fid-samples", type=argtypes.zero_or_at_least(2, "skip FID"), default=10000, help="FID samples vs the FP32 student (0 skips; default 10000)")
    parser.add_argument("--fid-variants", default="", metavar="NAMES",
                        help="comma list of variant names as in the table (e.g. 'openvino int8,prune openvino int8'): "
                             "FID only for those (default: all; every FID costs --fid-samples Inception passes)")
    parser.add_argument("--quality-samples", type=argtypes.positive_int, default=10000, help="samples for PSNR vs FP32 (default 10000)")
    parser.add_argument("--repeats", type=argtypes.positive_int, default=20, help="at least this many timed calls per measurement (default 20)")
    parser.add_argument("--min-seconds", type=argtypes.nonneg_float, default=2.0,
                        help="time each measurement for at least this long, after half as long of warm-up (default 2)")
    parser.add_argument("--extra", action="append", default=[], metavar="EXPORT_DIR",
                        help="also bench an existing export folder (e.g. from qat or prune); repeatable")
    parser.add_argument("--int8-ablation", action="store_true", help="add OpenVINO INT8 with --keep-first/--keep-last variants")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-rate micro-benchmarks")
    parser.add_argument("--json", metavar="OUT", help="write all results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distilgan.deploy import PRECISIONS, check_choice
    from distilgan.deploy.bench import run_bench
    from distilgan.errors import UserError
    from distilgan.utils.atomic import atomic_write_json
    from distilgan.utils.paths import check_output_file

    if args.json:
        check_output_file(args.json, "--json")  # before minutes of exports and timing
    argtypes.refuse_unless(args, "--fid-variants", args.fid_samples > 0, "chooses the variants that get an FID, and --fid-samples 0 skips FID")
    argtypes.refuse_unless(args, "--int8-ablation", "openvino" in _list(args.backends),
                           "adds OpenVINO INT8 variants, and --backends has no openvino")
    backends = [check_choice(b, BACKENDS, "backend") for b in _list(args.backends)]
    precisions = [check_choice(p, PRECISIONS, "precision") for p in _list(args.precisions)]
    try:
        batches = sorted({int(b) for b in _list(args.batch)})
    except ValueError:
        raise UserError(f"--batch must be a comma list of integers, got '{args.batch}'") from None
    if not backends or not precisions or not batches or min(batches) < 1:
        raise UserError("give at least one backend, one precision and batch sizes >= 1")
    if args.threads < 1 or args.repeats < 1 or args.fid_samples < 0 or args.quality_samples < 1 or args.min_seconds < 0:
        raise UserError("--threads and --repeats must be >= 1, --fid-samples and --min-seconds >= 0, --quality-samples >= 1")
    if "openvino" in backends or args.extra:
        from distilgan.deploy import require

        require("openvino", "--backends openvino")
    result = run_bench(args.checkpoint, backends, precisions, batches, threads=args.threads, fid_samples=args.fid_samples,
                       quality_samples=args.quality_samples, repeats=args.repeats, extra=args.extra,
                       ablation=args.int8_ablation, peak=not args.no_peak,
                       fid_for=_list(args.fid_variants), min_seconds=args.min_seconds, calib_data=args.calib_data)
    print(result["table"])
    if "peak" in result:
        p = result["peak"]
        print(f"\nMACs per image: {result['model']['macs_per_image']:,}; measured peak on {p['threads']} threads: "
              f"FP32 {p.get('peak_fp32_gflops', float('nan')):.1f} GFLOP/s, INT8 {p.get('peak_int8_gops', float('nan')):.1f} GOP/s "
              f"({p['conv_workload']})")
    print(f"load average before/after: {result['load_avg_before']} / {result['load_avg_after']} "
          f"(shared machine: re-run on a quiet one for reference figures)")
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
