"""What an export says of its model: which kind it is, what its graph takes, the facts a runtime needs.

Two kinds are exported: generators (``z``, ``labels`` -> ``images``) and image translators
(``images``, ``edits`` -> ``translated``). Critics, latent encoders and classifiers are refused in
one line. These facts go into distilgan-export.json and, for a lone model.onnx, its metadata.
"""

from __future__ import annotations

import os
from typing import Any

from distilgan.deploy import GENERATOR, TRANSLATOR
from distilgan.errors import UserError
from distilgan.utils.latent import model_classes, model_z_distribution


def load_generator(checkpoint: str | os.PathLike) -> Any:
    """A generator checkpoint in eval mode on the CPU (one-line errors for anything else)."""
    from distilgan.models import load_pretrained

    model = load_pretrained(checkpoint, device="cpu")
    if not hasattr(model, "z_dim"):
        raise UserError(f"{checkpoint} holds a {type(model).__name__}, not a generator (export the generator/ folder)")
    return model.eval()


def model_kind(model: Any) -> str:
    """GENERATOR or TRANSLATOR; a one-line error for any other model (critics, encoders, classifiers)."""
    from distilgan.models import LatentEncoder, UNetTranslator

    if isinstance(model, UNetTranslator):
        return TRANSLATOR
    if hasattr(model, "z_dim") and not isinstance(model, LatentEncoder):  # the encoder maps images *to* z
        return GENERATOR
    raise UserError(f"a {type(model).__name__} cannot be exported (export a generator or an image translator: "
                    "the generator/ folder of a run)")


def load_exportable(checkpoint: str | os.PathLike) -> Any:
    """A generator or image-translator checkpoint in eval mode on the CPU."""
    from distilgan.models import load_pretrained

    model = load_pretrained(checkpoint, device="cpu")
    try:
        model_kind(model)
    except UserError:
        raise UserError(f"{checkpoint} holds a {type(model).__name__}, which cannot be exported (export a generator "
                        "or an image translator: the generator/ folder of a run)") from None
    return model.eval()


def runtime_facts(model: Any) -> dict[str, Any]:
    """What a runtime needs to feed and name the model's inputs (in the JSON and the ONNX metadata)."""
    kind = model_kind(model)
    common = {"kind": kind, "resolution": int(model.resolution), "channels": int(model.channels)}
    if kind == TRANSLATOR:
        names = getattr(model, "class_names", None)
        return {**common, "num_edits": int(model.num_edits), "edit_names": list(model.edit_names),
                "edits": model.edits, "class_names": list(names) if names else None}
    names = getattr(model, "class_names", None)
    return {
        **common,
        "z_dim": int(model.z_dim),
        "num_classes": int(model.num_classes),
        "class_names": list(names) if names else [str(i) for i in range(model.num_classes)],
        # what it was trained on: the defaults of the runtime, the calibration and the parity z
        "z_distribution": model_z_distribution(model).to_dict(),
        "classes": model_classes(model),
    }


def model_facts(model: Any) -> dict[str, Any]:
    """Everything distilgan-export.json says of the model (a generator or a translator)."""
    from distilgan.models.macs import count_macs

    count = count_macs(model)
    facts = {"architecture": type(model).__name__, **runtime_facts(model), "macs_per_image": count.macs_per_image,
             "params": count.params, "teacher_fingerprint": getattr(model, "teacher_fingerprint", None)}
    if facts["kind"] == TRANSLATOR:
        facts.update(ngf=int(model.ngf), depth=int(model.depth), separable=bool(model.separable), norm=model.norm)
    return facts


generator_facts = model_facts  # its name before translators could be exported


def graph_contract(model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs) of the exported graph: name -> what it holds."""
    if model_kind(model) == GENERATOR:
        return {"z": "float32 (N, z_dim)", "labels": "int64 (N,)"}, {"images": "float32 NCHW in [-1, 1]"}
    inputs = {"images": "float32 NCHW in [-1, 1]"}
    if model.num_edits > 1:  # with one edit the input is unused, and the exporter drops it
        inputs["edits"] = "int64 (N,) edit indices"
    return inputs, {"translated": "float32 NCHW in [-1, 1]"}
