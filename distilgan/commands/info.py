"""``distilgan info``: what a checkpoint is: architecture, size, cost per image, classes, config."""

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
            "(conv/linear weights only), resolution, classes, file size and config."
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
    from distilgan.utils.latent import model_z_distribution

    folder = resolve_checkpoint(checkpoint)
    config = read_config(folder)
    model = load_pretrained(folder)
    counted = count_macs(model)
    names = getattr(model, "class_names", None)
    num_classes = int(model.num_classes)
    return {
        "checkpoint": str(folder),
        "architecture": config["architecture"],
        "parameters": counted.params,
        "macs_per_image": counted.macs_per_image,
        "macs_excluded": counted.excluded,
        "resolution": int(model.resolution),
        "channels": int(model.channels),
        "z_dim": getattr(model, "z_dim", None),
        "num_classes": num_classes,
        "class_names": list(names) if names else None,
        # what it was trained on (generators): every consumer's default
        "z_distribution": model_z_distribution(model).to_dict() if hasattr(model, "z_dim") else None,
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
    classes = facts["class_names"] or [str(i) for i in range(facts["num_classes"])]
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
    lines.append(f"classes:        {facts['num_classes']} ({', '.join(classes)})")
    if facts["classes"] is not None:
        lines.append(f"trained on:     {len(facts['classes'])} of them ({', '.join(classes[c] for c in facts['classes'])})")
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
