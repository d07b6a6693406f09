"""Fidelity to the teacher: FID between student samples and teacher samples.

Both sets come from the same z and labels, so the number measures how far the student's
distribution is from its teacher's, independent of how far the teacher is from real data.
"""

from __future__ import annotations

from typing import Any

from distilgan.errors import UserError
from distilgan.metrics.fid import fid_between_features


def compute(gen: Any, ref: Any = None, **_: Any) -> dict[str, Any]:
    if gen.teacher_features is None:
        raise UserError("the fidelity metric needs teacher samples: evaluate a --checkpoint and name its teacher with --fidelity-teacher SPEC")
    value = fid_between_features(gen.features, gen.teacher_features)
    return {"fidelity_fid": value, "fidelity_samples": len(gen.teacher_features)}
