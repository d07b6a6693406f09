"""Edge deployment figures for the acceptance table: PTQ, QAT and pruning of one student, all backends.

    .venv/bin/python bench/deploy_bench.py [--checkpoint DIR] [--threads 2] [--qat-steps 60]
        [--prune-steps 150] [--fid-samples 0] [--quality-samples 2000]

Without --checkpoint it uses a default-size DiStyleGAN student with random weights whose batch-norm
statistics are re-estimated on its own inputs (so activations have realistic ranges); speed does
not depend on the weights, but quality figures (PSNR, FID vs FP32) of a random student say little
and must be re-measured on a trained one. Steps: QAT (distilgan qat) and pruning to <= 50% MACs
(distilgan prune) into a scratch folder, then ``distilgan bench`` over torch / onnxruntime /
openvino x fp32 / fp16 / int8, the INT8 keep-first/keep-last and bf16-compute ablation, and the QAT
and pruned exports. Writes bench/results/deploy.json (with the load average: this CPU is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from distilgan.deploy.bench import load_avg, run_bench
    from distilgan.deploy.commands_common import finish_training_command
    from distilgan.deploy.export import export_model, load_generator
    from distilgan.deploy.finetune import recalibrate_batchnorm
    from distilgan.deploy.prune import prune_and_distil
    from distilgan.deploy.qat import quantization_aware_training
    from distilgan.models import DiStyleGANGenerator
    from distilgan.utils.atomic import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="generator checkpoint (default: random default-size student)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the timed runs")
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads for QAT/pruning (1 is faster on a busy 2-core box)")
    parser.add_argument("--batch-size", type=int, default=32, help="QAT/pruning batch size")
    parser.add_argument("--qat-steps", type=int, default=60)
    parser.add_argument("--prune-steps", type=int, default=150)
    parser.add_argument("--fid-samples", type=int, default=0, help="FID samples per variant (Inception is ~1.4 img/s on this CPU)")
    parser.add_argument("--quality-samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "deploy.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.train_threads)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as scratch:
        root = Path(scratch)
        if args.checkpoint:
            checkpoint, origin = args.checkpoint, f"checkpoint {args.checkpoint}"
        else:
            torch.manual_seed(0)
            model = DiStyleGANGenerator()
            recalibrate_batchnorm(model, batches=8, batch_size=256)
            checkpoint = str(model.save_pretrained(root / "student"))
            origin = "default-size DiStyleGANGenerator, random weights (seed 0), BN statistics re-estimated"
        model = load_generator(checkpoint)
        tuned, qat_report, fake_quantised = quantization_aware_training(model, steps=args.qat_steps, batch_size=args.batch_size,
                                                                       lr=2e-5)
        finish_training_command(model, tuned, checkpoint, root / "qat", "openvino", "qat", qat_report, quantized=fake_quantised)
        pruned, prune_report = prune_and_distil(model, 0.5, steps=args.prune_steps, batch_size=args.batch_size)
        finish_training_command(model, pruned, checkpoint, root / "prune", "openvino", "prune", prune_report)
        export_model(pruned, root / "prune" / "openvino-fp32", fmt="openvino", precision="fp32",
                     source={"derived_by": "prune"})
        extra = [str(root / "qat" / "openvino-int8"), str(root / "prune" / "openvino-fp32"), str(root / "prune" / "openvino-int8")]
        result = run_bench(checkpoint, ["torch", "onnxruntime", "openvino"], ["fp32", "fp16", "int8"], [1, 64],
                           threads=args.threads, fid_samples=args.fid_samples, quality_samples=args.quality_samples,
                           repeats=args.repeats, extra=extra, ablation=True)
    result.update({"benchmark": "deploy", "student": origin, "qat": qat_report, "prune": prune_report,
                   "seconds": round(time.time() - started, 1), "load_avg_end": load_avg(),
                   "note": "2-core shared CPU: figures are upper bounds on latency; re-run on a quiet machine"})
    atomic_write_json(args.out, result)
    print(result["table"])
    p = result["peak"]
    print(f"\nMACs/image {result['model']['macs_per_image']:,}; peak FP32 {p['peak_fp32_gflops']:.1f} GFLOP/s, "
          f"INT8 {p['peak_int8_gops']:.1f} GOP/s on {args.threads} threads; load {result['load_avg_before']} -> {result['load_avg_end']}")
    print(f"QAT: fake-INT8 L1 {qat_report['l1_fake_int8_before']:.4g} -> {qat_report['l1_fake_int8_after']:.4g}; "
          f"prune: MACs ratio {prune_report['macs_ratio']:.3f}, L1 to unpruned {prune_report['l1_to_unpruned_final']:.4g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
