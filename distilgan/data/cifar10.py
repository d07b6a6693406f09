"""Official CIFAR-10 (python format): where it lives, how it is downloaded, and how it is read safely.

The release is ``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/``: five training batches,
one test batch and ``batches.meta``, each a Python 2 pickle of a dict of numpy arrays and lists.
We read them from the folder or straight from the tar (no extraction) with a restricted unpickler
that only rebuilds numpy arrays, so a malicious pickle cannot run code.

Checksums (official, the same values torchvision uses) are checked per batch file. A mismatch means
"not the official pixels" (e.g. the rebuilt JPEG copy used in tests), which is legitimate for a path
the user chose, so by default it is a warning; it is an error for the cached ``cifar10`` name (that
cache must hold the official release) and for a fresh download (the tar's md5 must match).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from distilgan.errors import UserError

try:  # numpy 2 renamed numpy.core to numpy._core; old pickles name the former
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TAR_NAME = "cifar-10-python.tar.gz"
CIFAR10_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_FOLDER = "cifar-10-batches-py"
META_NAME = "batches.meta"
# Official md5 of every file inside cifar-10-batches-py/ (checked against torchvision's CIFAR10).
FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    META_NAME: "5ff9c542aee3614f3951f8cda6e48888",
}
SPLIT_BATCHES = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}


def cifar10_data_dir() -> Path:
    """Folder for the ``cifar10`` name: env ``DISTILGAN_DATA``, else ``~/.cache/distilgan/datasets``."""
    return Path(os.environ.get("DISTILGAN_DATA", Path.home() / ".cache" / "distilgan" / "datasets")).expanduser()


def find_cifar10(path: str | os.PathLike) -> Path | None:
    """The batch folder or tar.gz that ``path`` designates, or None if it is not CIFAR-10 python.

    Accepts the ``cifar-10-batches-py`` folder itself, its parent, the tar.gz, or a folder holding it.
    """
    path = Path(path)
    if path.is_file():
        return path if path.name.endswith((".tar.gz", ".tgz", ".tar")) else None
    for candidate in (path, path / BATCH_FOLDER):
        if (candidate / META_NAME).is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    if (path / CIFAR10_TAR_NAME).is_file():
        return path / CIFAR10_TAR_NAME
    return None


# --- safe unpickling ---------------------------------------------------------------------------

# Everything a CIFAR batch pickle may reference: numpy array/dtype reconstruction (under the numpy 1
# and numpy 2 module names) and the codec helper Python 3 uses for bytes at protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module == "_codecs":
            return codecs.encode
        if module.endswith("multiarray"):
            return getattr(_multiarray, name)
        return getattr(np, name)


def safe_unpickle(data: bytes, where: str) -> dict:
    """Unpickle one CIFAR file (Python 2 or 3 pickle) allowing only numpy arrays; keys become str."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as err:  # any unpickling failure is a bad file, never a crash
        raise UserError(f"cannot read CIFAR-10 file {where}: {err} (use the official python-format files)") from None
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR-10 file {where} holds a {type(obj).__name__}, expected a dict (not a CIFAR batch)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parse_batch(batch: dict, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, labels int64) from one batch dict, with shape and range checks."""
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserError(f"CIFAR-10 batch {where} has data {shape}, expected uint8 (N, 3072) (file is not CIFAR-10)")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"CIFAR-10 batch {where} has no integer 'labels' list (file is not CIFAR-10)") from None
    if len(labels) != len(data) or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        raise UserError(f"CIFAR-10 batch {where} has {len(labels)} labels for {len(data)} rows or labels outside 0..{num_classes - 1}")
    # Rows are channel-planar (1024 R, 1024 G, 1024 B), each plane row-major.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


# --- reading -----------------------------------------------------------------------------------


def _read_files(location: Path, names: list[str]) -> dict[str, bytes]:
    """Raw bytes of the named files from a batch folder or from the tar (streamed, no extraction)."""
    if location.is_dir():
        missing = [n for n in names if not (location / n).is_file()]
        if missing:
            raise UserError(f"CIFAR-10 folder {location} lacks {', '.join(missing)} (re-extract {CIFAR10_TAR_NAME})")
        return {n: (location / n).read_bytes() for n in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(location, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 2 and parts[-2] == BATCH_FOLDER and parts[-1] in names:
                    found[parts[-1]] = tar.extractfile(member).read()
                    if len(found) == len(names):
                        break  # the rest of the stream would only be decompressed for nothing
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise UserError(f"cannot read {location}: {err} (the archive is corrupt or truncated; download it again)") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise UserError(f"{location} has no {BATCH_FOLDER}/{missing[0]} (not the CIFAR-10 python archive)")
    return found


def _check_md5(files: dict[str, bytes], location: Path, verify_md5: bool | None) -> bool | None:
    """True if every file is official, False if not (warning, or UserError when strict), None if unchecked."""
    if verify_md5 is False:
        return None
    differing = [n for n, data in files.items() if hashlib.md5(data).hexdigest() != FILE_MD5[n]]
    if not differing:
        return True
    message = (
        f"CIFAR-10 at {location}: {', '.join(differing)} differ from the official release (md5), so pixels or "
        f"labels may differ and metrics are not comparable with published CIFAR-10 numbers"
    )
    if verify_md5:
        raise UserError(f"{message} (replace it with the official {CIFAR10_URL}, or pass the path of this copy "
                        f"instead of the name cifar10 to use it anyway)")
    warnings.warn(message, stacklevel=3)
    return False


def read_cifar10(
    path: str | os.PathLike, split: str = "train", verify_md5: bool | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Read one split from a batch folder (or its parent) or the tar.gz.

    Returns (images uint8 NHWC, labels int64, class_names, info) where ``info`` says the location and
    whether the md5s matched. ``verify_md5``: None warns on a mismatch, True raises, False skips.
    """
    if split not in SPLIT_BATCHES:
        raise UserError(f"unknown split {split!r} for CIFAR-10 (use one of: {', '.join(SPLIT_BATCHES)})")
    location = find_cifar10(path)
    if location is None:
        raise UserError(f"{path} is not a CIFAR-10 python folder or {CIFAR10_TAR_NAME} (check the path)")
    names = [META_NAME, *SPLIT_BATCHES[split]]
    files = _read_files(location, names)
    official = _check_md5(files, location, verify_md5)
    meta = safe_unpickle(files[META_NAME], f"{location}/{META_NAME}")
    class_names = [_text(name) for name in meta.get("label_names", [])]
    if not class_names:
        raise UserError(f"{location}/{META_NAME} has no label_names (not the CIFAR-10 meta file)")
    parts = [_parse_batch(safe_unpickle(files[n], f"{location}/{n}"), f"{location}/{n}", len(class_names)) for n in SPLIT_BATCHES[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels, class_names, {"path": str(location.resolve()), "official_md5": official}


# --- download ----------------------------------------------------------------------------------


def download_cifar10(root: str | os.PathLike | None = None, url: str = CIFAR10_URL, md5: str = CIFAR10_TAR_MD5) -> Path:
    """Fetch the tar.gz into ``root`` (default :func:`cifar10_data_dir`) atomically, md5-checked."""
    from distilgan.utils.download import download_verified

    return download_verified(url, Path(root or cifar10_data_dir()) / CIFAR10_TAR_NAME, md5, algorithm="md5")


def locate_cifar10(download: bool = False) -> Path:
    """The cached CIFAR-10 for the ``cifar10`` name; downloads it when asked, else a one-line UserError."""
    root = cifar10_data_dir()
    found = find_cifar10(root) if root.is_dir() else None
    if found is not None:
        return found
    if download:
        return download_cifar10(root, CIFAR10_URL, CIFAR10_TAR_MD5)  # read now, so a mirror can be patched in
    # There is no --download option: a path always works, and the download is a Python call.
    raise UserError(
        f"CIFAR-10 not found in {root} (give a path instead of the name cifar10: {CIFAR10_TAR_NAME}, its "
        f"{BATCH_FOLDER} folder, or a .zip or folder of class folders; or put {CIFAR10_TAR_NAME} from {CIFAR10_URL} "
        f"into {root} (DISTILGAN_DATA sets this folder), e.g. with python -c \"from distilgan.data.cifar10 import "
        f"download_cifar10; download_cifar10()\")"
    )
