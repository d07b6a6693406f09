"""distilgan: distil big class-conditional generators into tiny, fast ones."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "ImageTranslator", "StudentGenerator"]


def __getattr__(name: str):
    # Lazy so that `import distilgan` (and `distilgan --help`) does not import torch.
    if name in ("StudentGenerator", "ImageTranslator"):
        from distilgan import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'distilgan' has no attribute {name!r}")
