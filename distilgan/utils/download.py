"""One verified download: a URL into a file, atomically, checked against a known digest.

Nothing half-written or with the wrong digest is ever left at the target (``atomic_path``
discards the temporary file when anything raises), and every failure is one line that says where
to put the file by hand, for machines that cannot reach the internet.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from distilgan.errors import UserError


def download_verified(url: str, target: str | os.PathLike, digest: str, algorithm: str = "sha256", timeout: float = 60) -> Path:
    """Fetch ``url`` to ``target`` with a progress bar; raise a one-line UserError on failure."""
    from distilgan.utils.atomic import atomic_path
    from distilgan.utils.progress import progress_bar

    target = Path(target)
    hasher = hashlib.new(algorithm)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, progress_bar(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
            if hasher.hexdigest() != digest:
                raise UserError(f"downloaded {url} has {algorithm} {hasher.hexdigest()}, expected {digest} "
                                f"(retry; or put the file into {target.parent} yourself)")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download {url}: {reason} (offline? put {target.name} from {url} into {target.parent})") from None
    return target


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()
