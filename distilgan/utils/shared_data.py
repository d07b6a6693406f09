"""Where tests and benchmarks find the read-only ``shared`` folder (datasets and weights).

One setting: the environment variable ``DISTILGAN_SHARED``; by default ``../shared`` beside the
repository root. The product never needs this folder: it is for tests, CI and benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    return Path(os.environ.get("DISTILGAN_SHARED", REPO_ROOT.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path | None:
    """Path inside the shared folder, or None when it is absent."""
    path = shared_dir().joinpath(*parts)
    return path if path.exists() else None
