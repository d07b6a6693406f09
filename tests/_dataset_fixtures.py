"""Tiny synthetic datasets in every layout that ``open_dataset`` reads, written with known contents."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["apple", "bee", "cat"]


def random_images(seed: int, n: int, size: int = 8, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def write_cifar_folder(root: Path, per_batch: int = 4, protocol: int = 2) -> dict:
    """``root/cifar-10-batches-py`` in the official dict format (bytes keys, planar rows).

    Returns the expected arrays: ``train_images``/``train_labels``/``test_images``/``test_labels``.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)
    expected: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for seed, batch in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images = random_images(seed, per_batch, size=32)
        labels = [(seed + i) % 10 for i in range(per_batch)]
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # planar R, G, B rows
        with open(folder / batch, "wb") as f:
            record = {b"batch_label": batch.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * per_batch}
            pickle.dump(record, f, protocol=protocol)
        split = "test" if batch == "test_batch" else "train"
        expected[f"{split}_images"].append(images)
        expected[f"{split}_labels"].append(np.array(labels))
    return {k: np.concatenate(v) for k, v in expected.items()}


def tar_folder(root: Path) -> Path:
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format=fmt)
    return buffer.getvalue()


def class_tree_files(splits: tuple[str, ...] = (), per_class: int = 3, size: int = 8) -> tuple[dict[str, bytes], dict]:
    """{relative path: PNG bytes} of a class tree (with split folders when given) and expected arrays."""
    files, expected = {}, {}
    for s_index, split in enumerate(splits or ("",)):
        images, labels = [], []
        for c, name in enumerate(CLASSES):
            for k in range(per_class):
                image = random_images(100 * s_index + 10 * c + k, 1, size)[0]
                files[f"{split + '/' if split else ''}{name}/{k:03d}.png"] = encode(image)
                images.append(image)
                labels.append(c)
        expected[split or "train"] = (np.stack(images), np.array(labels))
    return files, expected


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def stylegan_files(labels: list[int] | None, size: int = 8) -> tuple[dict[str, bytes], np.ndarray]:
    """Files as NVIDIA's dataset_tool.py writes them: ``00000/img00000000.png`` + ``dataset.json``."""
    n = len(labels) if labels is not None else 4
    images = random_images(7, n, size)
    names = [f"00000/img{i:08d}.png" for i in range(n)]
    files = {name: encode(image) for name, image in zip(names, images)}
    meta = {"labels": [[name, label] for name, label in zip(names, labels)] if labels is not None else None}
    files["dataset.json"] = json.dumps(meta).encode()
    return files, images
