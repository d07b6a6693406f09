"""``distilgan export``: a student checkpoint (generator or image translator) -> ONNX or OpenVINO IR
(fp32, fp16 or int8) + parity check."""

from __future__ import annotations

import argparse

from distilgan.utils import argtypes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from distilgan.deploy.quantize import PRESETS  # light: numpy, no OpenVINO

    parser = subparsers.add_parser(
        "export",
        help="export a student or image translator to ONNX or OpenVINO (fp32, fp16, int8)",
        description=(
            "Export a generator or image-translator checkpoint for edge inference. The folder gets model.onnx (or "
            "model.xml + model.bin) and distilgan-export.json (source fingerprint, classes or edits, resolution, "
            "parity against PyTorch). INT8 is post-training quantisation: NNCF for OpenVINO, onnxruntime "
            "quantize_static (QDQ) for ONNX, calibrated on a generator's own inputs (z ~ N(0, I), balanced labels) "
            "or on the source images of a pair set for a translator (--calib-data)."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="generator or translator checkpoint folder, or a built-in name")
    parser.add_argument("--format", default="onnx", help="onnx or openvino (default onnx)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16 or int8 (default fp32)")
    parser.add_argument("--batch", default="dynamic", type=argtypes.batch_spec, help="'dynamic' (default) or a fixed batch size N")
    parser.add_argument("--out", help="output folder (default exports/<checkpoint>-<format>-<precision>)")
    parser.add_argument("--calibration-size", type=argtypes.positive_int, default=512, help="int8: calibration samples (default 512)")
    parser.add_argument("--calibration-seed", type=argtypes.seed, default=0, help="int8: seed of the calibration z (a translator: of the choice of pairs; default 0)")
    parser.add_argument("--calib-data", metavar="PAIRS",
                        help="int8 of a translator (required there): a pair set (distilgan pairs) whose source images, "
                             "with their edits, calibrate the int8 ranges and feed the parity check")
    parser.add_argument("--keep-first", action="store_true", help="int8: keep the first layer (z projection; a translator's stem conv) in float")
    parser.add_argument("--keep-last", action="store_true", help="int8: keep the last layer (to-RGB conv) in float")
    parser.add_argument("--preset", default="performance", choices=PRESETS,
                        help="int8 with openvino: performance (symmetric activations, default) or mixed (asymmetric)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from distilgan.deploy import FORMATS, PRECISIONS, check_choice
    from distilgan.deploy.export import export_checkpoint, parity_line, parse_batch

    fmt = check_choice(args.format, FORMATS, "--format")
    precision = check_choice(args.precision, PRECISIONS, "--precision")
    batch = parse_batch(args.batch)
    out = args.out or str(Path("exports") / f"{Path(args.checkpoint).name}-{fmt}-{precision}")
    from distilgan.utils.paths import check_output_dir

    check_output_dir(out, "--out", replace=True)  # the export folder is swapped in whole
    mode = f"--format {fmt} --precision {precision}"
    for option in ("--calibration-size", "--calibration-seed", "--calib-data", "--keep-first", "--keep-last"):
        argtypes.refuse_unless(args, option, precision == "int8", f"applies to --precision int8 only, not {mode}")
    argtypes.refuse_unless(args, "--preset", fmt == "openvino" and precision == "int8",
                           f"applies to --format openvino --precision int8 only (NNCF's preset), not {mode}")
    info = export_checkpoint(
        args.checkpoint, out, fmt=fmt, precision=precision, batch=batch, calibration_size=args.calibration_size,
        calibration_seed=args.calibration_seed, keep_first=args.keep_first, keep_last=args.keep_last, preset=args.preset,
        calib_data=args.calib_data,
    )
    print(f"exported {info['architecture']} to {out} ({fmt}, {precision}, batch {info['batch']}, "
          f"{info['size_bytes'] / 1e6:.2f} MB in {', '.join(info['files'])})")
    print(parity_line(info))
    if "inputs" in info["parity"]:  # a translator: say what the parity batch was
        print(f"parity inputs: {info['parity']['inputs']}")
    return 0
