"""Real image datasets behind one interface: ``open_dataset(spec, split) -> ImageDataset``.

The layout is detected from the path:

- CIFAR-10 python format: a ``cifar-10-batches-py`` folder, its parent, or ``cifar-10-python.tar.gz``
  (see :mod:`distilgan.data.cifar10`); the name ``cifar10`` means the cached copy.
- StyleGAN2-ADA dataset (folder or zip): images anywhere plus ``dataset.json`` with
  ``{"labels": [["rel/path.png", int], ...]}``; ``"labels": null`` gives an unlabeled set (all labels
  0, one class) that still works for unconditional use.
- Class-folder tree (folder or zip): ``ROOT/<class>/*.png|jpg|jpeg|webp|bmp``, or with split folders
  ``ROOT/train/<class>/...``; a single wrapping folder inside a zip is skipped. Only images directly
  in ROOT (no class folders) form one class "unlabeled".
- ``.npz``: ``images`` (or ``x``) uint8 NHWC or NCHW, ``labels`` (or ``y``), optional ``class_names``;
  or a packed JPEG set: ``jpeg`` (all files concatenated), ``offsets`` (N + 1), ``labels``, ``classes``
  (e.g. ``cifar10-train-jpeg-packed.npz``), decoded on open.

Ordering is plain code-point order of names (as torchvision's ImageFolder and StyleGAN2-ADA sort),
not natural order: ``img10.png`` comes before ``img2.png``; zero-padded names sort as expected.
Class indices follow the sorted class-folder names, taken from all splits together so that a class
has the same index in ``train`` and ``test``. Sources without split folders only have ``train``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from distilgan.data.image_files import (
    IMAGE_EXTENSIONS,
    SPLIT_FOLDERS,
    FolderFiles,
    ZipFiles,
    decode_images,
    is_image,
    strip_wrapper,
)
from distilgan.errors import UserError



class ImageDataset:
    """Images uint8 (N, H, W, C) with int64 labels and class names, plus where they came from."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        source: str = "arrays",
        split: str = "train",
        format: str = "arrays",
        info: dict | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
            raise UserError(f"{source}: images are {images.dtype} {images.shape}, expected uint8 (N, H, W, 1 or 3)")
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{source}: labels are {labels.dtype} {labels.shape}, expected integers ({len(images)},)")
        if not class_names:
            raise UserError(f"{source}: no class names")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise UserError(f"{source}: labels must lie in 0..{len(class_names) - 1} (one per class name)")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.class_names = [str(name) for name in class_names]
        self.source, self.split, self.format = source, split, format
        self.info = dict(info or {})
        self._fingerprint: str | None = None

    # --- shape -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return f"ImageDataset({self.format} {self.source!r} split={self.split} n={len(self)} {self.images.shape[1:]})"

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def resolution(self) -> int:
        """Side of the (square) images; non-square sets raise, since every model here is square."""
        if self.height != self.width:
            raise UserError(f"{self.source}: images are {self.height}x{self.width}, not square (resize or crop them)")
        return self.height

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- identity --------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of the content (shape, pixels, labels, class names); computed once, then cached."""
        if self._fingerprint is None:
            digest = hashlib.sha256(b"distilgan-image-dataset-v1")
            digest.update(json.dumps([list(self.images.shape), self.class_names]).encode())
            digest.update(memoryview(np.ascontiguousarray(self.images)).cast("B"))
            digest.update(self.labels.astype("<i8").tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        """What metric protocols and manifests record about the reference data."""
        return {
            "source": self.source,
            "format": self.format,
            "split": self.split,
            "count": len(self),
            "resolution": self.height if self.height == self.width else [self.height, self.width],
            "channels": self.channels,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "fingerprint": self.fingerprint(),
            **self.info,
        }

    # --- cheap views -----------------------------------------------------------------------
    def subset(self, indices: Sequence[int] | np.ndarray, note: dict | None = None) -> "ImageDataset":
        """A new dataset of the given rows (integer indices or a boolean mask), same class names."""
        index = np.asarray(indices)
        if index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
            index = index.astype(np.int64)  # e.g. an empty list
        try:
            images, labels = self.images[index], self.labels[index]
        except IndexError as err:
            raise UserError(f"{self.source}: bad subset indices: {err} (the dataset has {len(self)} images)") from None
        info = {**self.info, **(note or {"subset_of_count": len(self)})}
        return ImageDataset(images, labels, self.class_names, self.source, self.split, self.format, info)

    def take(self, n: int, seed: int = 0) -> "ImageDataset":
        """``n`` distinct images drawn with ``seed`` (kept in dataset order) for tests and metrics."""
        from distilgan.utils.noise import rng

        if not 0 <= n <= len(self):
            raise UserError(f"cannot take {n} images from {self.source}: it has {len(self)} (ask for fewer)")
        chosen = np.sort(rng(seed).permutation(len(self))[:n])
        return self.subset(chosen, note={"take": {"n": int(n), "seed": int(seed), "of": len(self)}})

    def per_class(self, label: int | str) -> "ImageDataset":
        """All images of one class, given by index or by name."""
        index = self.class_index(label)
        return self.subset(np.flatnonzero(self.labels == index), note={"class": self.class_names[index]})

    def class_index(self, label: int | str) -> int:
        """One class by name or index (the one label resolver, strict)."""
        from distilgan.utils.labels import resolve_labels

        return int(resolve_labels([label], self.class_names, self.num_classes, owner=f"{self.source}'s")[0])


# --- readers ----------------------------------------------------------------------------------


def _only_train(split: str, source: str, what: str) -> None:
    if split != "train":
        raise UserError(f"{source} is {what} without split folders: only split 'train' (all images) exists, not {split!r}")


def _read_stylegan(files, names: list[str], json_name: str, split: str, source: str, workers: int | None) -> ImageDataset:
    prefix = json_name[: -len("dataset.json")]
    _only_train(split, source, "a StyleGAN2-ADA dataset")
    try:
        meta = json.loads(files.read(json_name))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{files.where(json_name)} is not valid JSON: {err} (rewrite it with dataset_tool.py)") from None
    images = [n for n in names if n.startswith(prefix) and is_image(n)]
    if not images:
        raise UserError(f"{source} has a dataset.json but no images ({', '.join(IMAGE_EXTENSIONS)})")
    raw = meta.get("labels") if isinstance(meta, dict) else None
    if raw is None:  # unlabeled: usable for unconditional training and FID, not for per-class metrics
        labels, class_names = np.zeros(len(images), np.int64), ["unlabeled"]
    else:
        table = {}
        for entry in raw:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], int) and entry[1] >= 0):
                raise UserError(f"{files.where(json_name)}: label entry {entry!r} is not [path, class index >= 0] (vector labels are not supported)")
            table[str(entry[0]).replace("\\", "/")] = entry[1]
        missing = [n for n in images if n[len(prefix):] not in table]
        if missing:
            raise UserError(f"{files.where(missing[0])} has no label in dataset.json ({len(missing)} unlabeled images; add them or remove the files)")
        labels = np.array([table[n[len(prefix):]] for n in images], dtype=np.int64)
        class_names = meta.get("class_names") or [str(i) for i in range(int(labels.max()) + 1)]
    array = decode_images(files, images, workers, desc=Path(source).name)
    return ImageDataset(array, labels, class_names, source, split, "stylegan2-ada", {"labeled": raw is not None})


def _read_class_tree(files, names: list[str], split: str, source: str, workers: int | None) -> ImageDataset:
    images = [n for n in names if is_image(n)]
    if not images:
        raise UserError(f"{source} has no images ({', '.join(IMAGE_EXTENSIONS)}) (check the path)")
    prefix = strip_wrapper(images, min_depth=2 if any(n.count("/") for n in images) else 1)
    parts = [n[len(prefix):].split("/") for n in images]
    if all(len(p) >= 3 and p[0] in SPLIT_FOLDERS for p in parts):
        splits = sorted({p[0] for p in parts})
        if split not in splits:
            raise UserError(f"unknown split {split!r} for {source} (it has: {', '.join(splits)})")
        class_names = sorted({p[1] for p in parts})  # all splits: same index for a class everywhere
        chosen = [(n, p[1]) for n, p in zip(images, parts) if p[0] == split]
        layout = "class-folders"
    elif all(len(p) >= 2 for p in parts):
        _only_train(split, source, "a class-folder tree")
        class_names = sorted({p[0] for p in parts})
        chosen = [(n, p[0]) for n, p in zip(images, parts)]
        layout = "class-folders"
    elif all(len(p) == 1 for p in parts):
        _only_train(split, source, "a flat image folder")
        class_names, chosen, layout = ["unlabeled"], [(n, "unlabeled") for n in images], "image-folder"
    else:
        stray = next(n for n, p in zip(images, parts) if len(p) == 1)
        raise UserError(f"image {files.where(stray)} is outside a class folder (move it into ROOT/<class>/)")
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[c] for _, c in chosen], dtype=np.int64)
    array = decode_images(files, [n for n, _ in chosen], workers, desc=f"{Path(source).name} {split}")
    return ImageDataset(array, labels, class_names, source, split, layout)


def _read_image_source(files, split: str, source: str, workers: int | None) -> ImageDataset:
    names = files.names()
    if not names:
        raise UserError(f"{source} is empty (expected class folders, a dataset.json, or CIFAR-10 batches)")
    json_names = [n for n in names if n.rsplit("/", 1)[-1] == "dataset.json"]
    if json_names:
        json_name = min(json_names, key=lambda n: n.count("/"))  # the top-most one describes the set
        return _read_stylegan(files, names, json_name, split, source, workers)
    return _read_class_tree(files, names, split, source, workers)


class _PackedJpegFiles:
    """The ``files`` interface of ``decode_images`` over one concatenated JPEG buffer."""

    def __init__(self, path: Path, jpeg: np.ndarray, offsets: np.ndarray) -> None:
        self.path, self.jpeg, self.offsets = path, jpeg, offsets

    def read(self, name: str) -> bytes:
        i = int(name)
        return self.jpeg[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def where(self, name: str) -> str:
        return f"{self.path} image {name}"


def _read_packed_jpeg(path: Path, arrays: dict[str, np.ndarray], split: str, workers: int | None) -> ImageDataset:
    """A packed JPEG set: ``jpeg`` (uint8, the files concatenated), ``offsets`` (N + 1), ``labels``,
    optional ``classes``; image i is the JPEG file ``jpeg[offsets[i]:offsets[i+1]]``."""
    jpeg, offsets = arrays["jpeg"].reshape(-1), arrays["offsets"].reshape(-1).astype(np.int64)
    count = len(offsets) - 1
    if jpeg.dtype != np.uint8 or count < 1 or offsets[0] != 0 or offsets[-1] != len(jpeg) or np.any(np.diff(offsets) <= 0):
        raise UserError(f"{path}: 'offsets' must rise from 0 to len(jpeg) = {len(jpeg)} over uint8 'jpeg' bytes "
                        "(rebuild the packed file)")
    labels = arrays["labels"].reshape(-1) if "labels" in arrays else np.zeros(count, np.int64)
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: labels are {labels.dtype} {labels.shape}, expected {count} integers")
    names = arrays.get("classes", arrays.get("class_names"))
    class_names = [str(n) for n in names.reshape(-1)] if names is not None else \
        [str(i) for i in range(int(labels.max()) + 1)] if "labels" in arrays else ["unlabeled"]
    files = _PackedJpegFiles(path, jpeg, offsets)
    images = decode_images(files, [str(i) for i in range(count)], workers, desc=path.name)
    return ImageDataset(images, labels, class_names, str(path.resolve()), split, "npz-packed-jpeg")


def _read_npz(path: Path, split: str, workers: int | None = None) -> ImageDataset:
    source = str(path)
    _only_train(split, source, "an .npz file")
    if not zipfile.is_zipfile(path):  # else numpy would advise allow_pickle=True, or return a lone .npy array
        from distilgan.utils.npz import npz_problem

        raise UserError(npz_problem(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        from distilgan.utils.npz import npz_problem

        raise UserError(npz_problem(path, err)) from None
    if "jpeg" in arrays and "offsets" in arrays:
        return _read_packed_jpeg(path, arrays, split, workers)
    key = next((k for k in ("images", "x") if k in arrays), None)
    if key is None:
        raise UserError(f"{path} has no 'images' (or 'x') array; it has: {', '.join(arrays) or 'nothing'}")
    images = arrays[key]
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) grayscale
    if images.ndim != 4:
        raise UserError(f"{path}: images have shape {images.shape}, expected (N, H, W, C) or (N, C, H, W)")
    if images.shape[3] not in (1, 3) and images.shape[1] in (1, 3):
        images = np.transpose(images, (0, 2, 3, 1))  # NCHW -> NHWC
    if images.shape[3] not in (1, 3):
        raise UserError(f"{path}: images have shape {images.shape}; need 1 or 3 channels, NHWC or NCHW")
    images = _to_uint8(images, path)
    labels = next((arrays[k] for k in ("labels", "y") if k in arrays), None)
    if labels is None:
        labels, default_names = np.zeros(len(images), np.int64), ["unlabeled"]
    else:
        labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
            raise UserError(f"{path}: labels are {labels.dtype} {labels.shape}, expected {len(images)} integers >= 0")
        default_names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 1)]
    class_names = [str(n) for n in arrays["class_names"].reshape(-1)] if "class_names" in arrays else default_names
    if len(class_names) < len(default_names):
        raise UserError(f"{path}: {len(class_names)} class_names but labels go up to {len(default_names) - 1}")
    return ImageDataset(np.ascontiguousarray(images), labels, class_names, source, split, "npz")


def _to_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    """uint8 as is; other numbers only if they are whole values in [0, 255] (uint8 stored wider)."""
    if images.dtype == np.uint8:
        return images
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise UserError(f"{path}: images are {images.dtype}, expected uint8")
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if low < 0 or high > 255 or not np.array_equal(images, np.round(images)):
        raise UserError(
            f"{path}: images are {images.dtype} in [{low:g}, {high:g}], expected uint8 values 0..255 "
            f"(convert [-1, 1] floats with distilgan.utils.images.float_to_uint8, [0, 1] floats with round(x * 255))"
        )
    return images.astype(np.uint8)


# --- entry point ------------------------------------------------------------------------------


def open_dataset(
    spec: str | os.PathLike,
    split: str = "train",
    download: bool = False,
    verify_md5: bool | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """Open a real dataset: a path (layout detected) or the name ``cifar10``.

    ``verify_md5`` only concerns CIFAR-10: None warns when files differ from the official release
    (paths you chose) and is strict for the cached ``cifar10`` name; True always raises, False skips.
    ``workers`` is the number of image-decoding threads (default: half the cores, at most 8).
    """
    from distilgan.data import cifar10

    path = Path(spec).expanduser()
    if not path.exists():
        if str(spec).lower().replace("-", "") != "cifar10":
            raise UserError(f"dataset not found: {spec} (give an existing folder, .zip, .npz or tar.gz, or the name cifar10)")
        location = cifar10.locate_cifar10(download)
        strict = True if verify_md5 is None else verify_md5
        images, labels, names, info = cifar10.read_cifar10(location, split, verify_md5=strict)
        return ImageDataset(images, labels, names, "cifar10", split, "cifar10-python", info)
    location = cifar10.find_cifar10(path)
    if location is not None:
        images, labels, names, info = cifar10.read_cifar10(location, split, verify_md5=verify_md5)
        return ImageDataset(images, labels, names, str(path.resolve()), split, "cifar10-python", info)
    if path.is_dir():
        return _read_image_source(FolderFiles(path), split, str(path.resolve()), workers)
    suffix = path.name.lower()
    if suffix.endswith(".npz"):
        return _read_npz(path, split, workers)
    if suffix.endswith(".zip"):
        archive = ZipFiles(path)
        try:
            return _read_image_source(archive, split, str(path.resolve()), workers)
        finally:
            archive.close()
    raise UserError(
        f"unknown dataset layout: {path} (use a class-folder tree or .zip, a StyleGAN2-ADA folder/zip with "
        f"dataset.json, an .npz with 'images', or CIFAR-10's {cifar10.CIFAR10_TAR_NAME})"
    )
