"""Data: real datasets (``datasets``, ``cifar10``, ``image_files``); distillation sets live in ``distilgan.store``.

``from distilgan.data import open_dataset`` is the entry point for real images; it needs only numpy
and Pillow, so importing this package stays cheap.
"""

from __future__ import annotations

from distilgan.data.datasets import ImageDataset, open_dataset

__all__ = ["ImageDataset", "open_dataset"]
