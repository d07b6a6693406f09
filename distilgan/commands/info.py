"""``distilgan info``: what a checkpoint is: architecture, size, cost per image, classes or edits, config.

Every registered architecture: generators (z, classes), image translators and their critics (edits),
latent encoders (z, classes), discriminators and classifiers (classes)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a model checkpoint",
        description=(
            "Print a checkpoint's architecture, parameter count, multiply-accumulates per image "
            "(conv/linear weights only), resolution, classes (a translator: its edits), file size and config."
        ),
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder (config.json + model.safetensors) or built-in name")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--layers", action="store_true", help="also list MACs and parameters per layer")
    parser.set_defaults(func=run)


def describe_checkpoint(checkpoint: str) -> dict[str, Any]:
    """The facts ``info`` prints, as a JSON-able dict."""
    from distilgan.models import load_pretrained
    from distilgan.models.macs import count_macs
    from distilgan.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, read_config, resolve_checkpoint
    from distilgan.utils.latent import as_distribution

    folder = resolve_checkpoint(checkpoint)
    config = read_config(folder)
    model = load_pretrained(folder)
    counted = count_macs(model)
    names = getattr(model, "class_names", None)
    num_classes = getattr(model, "num_classes", None)  # translators and pair critics have edits instead
    num_edits = getattr(model, "num_edits", None)
    # a generator, or an encoder into a generator's z: both carry the z distribution they were made for
    z_dim = getattr(model, "z_dim", None)
    return {
        "checkpoint": str(folder),
        "architecture": config["architecture"],
        "parameters": counted.params,
        "macs_per_image": counted.macs_per_image,
        "macs_excluded": counted.excluded,
        "resolution": int(model.resolution),
        "channels": int(model.channels),
        "z_dim": z_dim,
        "num_classes": None if num_classes is None else int(num_classes),
        "class_names": list(names) if names else None,
        "num_edits": None if num_edits is None else int(num_edits),
        "edit_names": list(getattr(model, "edit_names", None) or []) or None,
        # an encoder keeps its generator's z distribution in its config only
        "z_distribution": (as_distribution(getattr(model, "z_distribution", None) or config.get("z_distribution")).to_dict()
                           if z_dim is not None else None),
        "classes": getattr(model, "classes", None),
        "weights_dtype": config.get("weights_dtype"),
        "file_bytes": {name: (folder / name).stat().st_size for name in (CONFIG_NAME, WEIGHTS_NAME)},
        "config": config,
        "layers": [vars(layer) for layer in counted.layers],
    }


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} B"


def run(args: argparse.Namespace) -> int:
    from distilgan.models.macs import format_count

    facts = describe_checkpoint(args.checkpoint)
    if not args.layers:
        facts.pop("layers")
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    weights_bytes = facts["file_bytes"]["model.safetensors"]
    lines = [
        f"checkpoint:     {facts['checkpoint']}",
        f"architecture:   {facts['architecture']}",
        f"parameters:     {facts['parameters']:,} ({format_count(facts['parameters'])})",
        f"MACs per image: {facts['macs_per_image']:,} ({format_count(facts['macs_per_image'])}; excludes {facts['macs_excluded']})",
        f"resolution:     {facts['resolution']}x{facts['resolution']}, {facts['channels']} channel(s)",
    ]
    if facts["z_dim"] is not None:
        from distilgan.utils.noise import ZDistribution

        lines.append(f"z_dim:          {facts['z_dim']}, z {ZDistribution.from_dict(facts['z_distribution']).describe()}")
    if facts["num_edits"] is not None:
        edits = facts["edit_names"] or [str(i) for i in range(facts["num_edits"])]
        lines.append(f"edits:          {facts['num_edits']} ({', '.join(edits)})")
    if facts["num_classes"] is not None:
        classes = facts["class_names"] or [str(i) for i in range(facts["num_classes"])]
        lines.append(f"classes:        {facts['num_classes']} ({', '.join(classes)})")
        if facts["classes"] is not None:
            lines.append(f"trained on:     {len(facts['classes'])} of them ({', '.join(classes[c] for c in facts['classes'])})")
    elif facts["class_names"]:  # a translator's teacher classes: provenance only
        lines.append(f"classes:        of the teacher: {', '.join(facts['class_names'])}")
    lines += [
        f"file size:      {_size(weights_bytes)} model.safetensors ({facts['weights_dtype']}), "
        f"{_size(sum(facts['file_bytes'].values()))} in all",
        "config:         " + json.dumps(facts["config"], sort_keys=True),
    ]
    for layer in facts.get("layers", []):
        lines.append(f"  {layer['name']:<24} {layer['kind']:<16} MACs {layer['macs']:>14,}  params {layer['params']:>12,}")
    print("\n".join(lines))
    return 0


__all__ = ["add_parser", "describe_checkpoint", "run"]
