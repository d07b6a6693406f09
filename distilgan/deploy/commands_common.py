"""What `distilgan qat` and `distilgan prune` do after training: save, export INT8, write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilgan.utils.atomic import atomic_write_json


def finish_training_command(
    original: Any, tuned: Any, checkpoint: str, out: Path, fmt: str, kind: str, report: dict[str, Any],
    calibration_size: int = 512, quantized: Any | None = None,
) -> None:
    """Save ``tuned`` as OUT/generator, export it as OUT/<fmt>-int8, write OUT/<kind>.json, print a summary."""
    from distilgan.deploy.export import export_model, parity_line
    from distilgan.models import resolve_checkpoint
    from distilgan.utils.hashing import sha256_tree

    folder = resolve_checkpoint(checkpoint)
    source = {"checkpoint": str(folder), "fingerprint": sha256_tree(folder), "derived_by": kind}
    metadata = dict(getattr(original, "metadata", {}) or {})
    metadata[kind] = {"source": source, **{k: v for k, v in report.items() if not isinstance(v, dict)}}
    generator_dir = tuned.save_pretrained(out / "generator", metadata=metadata)
    source["fingerprint_after"] = sha256_tree(generator_dir)
    info = export_model(tuned, out / f"{fmt}-int8", fmt=fmt, precision="int8", calibration_size=calibration_size,
                        source=source, quantized_model=quantized)
    report = {**report, "checkpoint": str(generator_dir), "export": str(out / f"{fmt}-int8"), "export_parity": info["parity"]}
    atomic_write_json(out / f"{kind}.json", report)
    print(f"{kind}: saved {generator_dir}; exported {out / f'{fmt}-int8'}")
    print(parity_line(info))
