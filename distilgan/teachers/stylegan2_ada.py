"""``stylegan2-ada:PKL`` — a network pickle from NVIDIA's stylegan2-ada-pytorch.

The pickle refers to classes in NVIDIA's own code (``dnnlib``, ``torch_utils``, ``training``), which
is under a non-commercial licence and is NOT part of distilgan: the user clones
https://github.com/NVlabs/stylegan2-ada-pytorch and points ``repo=`` or the environment variable
``STYLEGAN2_ADA_REPO`` at the checkout. Loading unpickles the file, which runs code from it: only
use pickles you trust.

The generator is NVIDIA's ``G_ema`` (option ``network``), called as
``G(z, c_onehot, truncation_psi=psi, noise_mode=...)``; ``truncation`` is StyleGAN's psi (w-space
truncation toward the mean w), so this adapter truncates natively and the sampler leaves z alone.
Outputs are clamped to [-1, 1] by default, as NVIDIA's own generate.py does before saving.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.teachers.base import Teacher, require_file
from distilgan.teachers.adapter import (
    apply_common,
    module_fingerprint,
    take_options,
    to_numpy,
    torch_device,
)
from distilgan.utils.hashing import sha256_file

REPO_ENV = "STYLEGAN2_ADA_REPO"
REPO_URL = "https://github.com/NVlabs/stylegan2-ada-pytorch"
NOISE_MODES = ("const", "random", "none")


def find_repo(given: str | None) -> Path:
    """The user's checkout of NVIDIA's code: the option, else the environment variable."""
    location = given or os.environ.get(REPO_ENV)
    if not location:
        raise UserError(
            f"stylegan2-ada pickles need NVIDIA's code: git clone {REPO_URL} and set {REPO_ENV}=<that folder> "
            "(or pass repo=...)"
        )
    repo = Path(location).expanduser().resolve()
    if not (repo / "legacy.py").is_file() or not (repo / "dnnlib").is_dir():
        raise UserError(
            f"{repo} is not a checkout of stylegan2-ada-pytorch (no legacy.py and dnnlib/ there); "
            f"git clone {REPO_URL} and point {REPO_ENV} at it"
        )
    return repo


def import_legacy(repo: Path) -> Any:
    """NVIDIA's ``legacy`` module from ``repo`` (kept on sys.path: unpickling imports from it later)."""
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    import importlib

    loaded = sys.modules.get("legacy")
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve().parent != repo:
        raise UserError(f"another 'legacy' module is already imported ({loaded.__file__}); run in a fresh process")
    try:
        return importlib.import_module("legacy")
    except ImportError as err:
        raise UserError(f"cannot import NVIDIA's legacy.py from {repo}: {err} (install its requirements)") from None


class StyleGAN2ADATeacher(Teacher):
    native_truncation = True

    def __init__(self, path: Path, G: Any, opts: dict[str, Any]) -> None:
        self.path, self.G = path, G
        self.device = opts["device"]
        self.batch_size = int(opts["batch_size"])
        self.noise_mode = opts["noise_mode"]
        # fp16 layers on CPU are slow or unsupported; NVIDIA's code takes force_fp32 for exactly this.
        self.force_fp32 = opts["force_fp32"] if opts["force_fp32"] is not None else not self.device.startswith("cuda")
        self.c_dim = int(G.c_dim)
        self.z_dim = int(G.z_dim)
        self.num_classes = max(self.c_dim, 1)  # an unconditional pickle is a one-class teacher
        self.resolution = int(G.img_resolution)
        self.channels = int(G.img_channels)
        self.class_names = None
        self._fingerprint: str | None = None

    def _call(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            zt = torch.from_numpy(z).to(self.device)
            c = torch.zeros((len(z), self.c_dim), device=self.device)
            if self.c_dim:
                c[torch.arange(len(z)), torch.from_numpy(labels).to(self.device)] = 1.0
            psi = 1.0 if self.truncation is None else float(self.truncation)
            images = self.G(zt, c, truncation_psi=psi, noise_mode=self.noise_mode, force_fp32=self.force_fp32)
        return to_numpy(images, self.spec or "the StyleGAN2-ADA generator")

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._in_batches(z, labels, self.batch_size, self._call)

    def _torch_call(self, z: Any, labels: Any) -> Any:
        import torch

        c = torch.zeros((len(z), self.c_dim), device=self.device)
        if self.c_dim:
            c = torch.nn.functional.one_hot(labels.long().to(self.device), self.c_dim).float()
        psi = 1.0 if self.truncation is None else float(self.truncation)
        return self.G(z.to(self.device), c, truncation_psi=psi, noise_mode=self.noise_mode, force_fp32=self.force_fp32)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = sha256_file(self.path)
        return self._fingerprint

    def weights_fingerprint(self) -> str:
        """sha256 of G_ema's tensors alone (the pickle also holds D and training options)."""
        return module_fingerprint(self.G)


def load(location: str, **options: Any) -> Teacher:
    """Options: the common ones (``truncation`` = psi, default 1; ``clamp`` default on), plus ``repo``
    (NVIDIA checkout), ``noise_mode`` (const|random|none, default const), ``network`` (G_ema|G),
    ``force_fp32`` (default: on for CPU), ``batch_size`` (default 32)."""
    opts = take_options(
        options,
        "stylegan2-ada",
        {"repo": None, "noise_mode": "const", "network": "G_ema", "force_fp32": None, "batch_size": 32},
    )
    if "clamp" not in options or options["clamp"] is None:
        opts["clamp"] = True
    if opts["noise_mode"] not in NOISE_MODES:
        raise UserError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got '{opts['noise_mode']}'")
    if opts["network"] not in ("G_ema", "G"):
        raise UserError(f"network must be G_ema or G, got '{opts['network']}'")
    if int(opts["batch_size"]) < 1:
        raise UserError(f"batch_size must be >= 1, got {opts['batch_size']}")
    path = require_file(location, "StyleGAN2-ADA pickle")
    legacy = import_legacy(find_repo(opts["repo"]))
    device = torch_device(opts["device"])
    with open(path, "rb") as handle:
        try:
            networks = legacy.load_network_pkl(handle)
        except Exception as err:  # noqa: BLE001 - unpickling raises anything; the file is the user's to fix
            raise UserError(f"cannot load {location} as a StyleGAN2-ADA pickle: {type(err).__name__}: {err}") from None
    if not isinstance(networks, dict) or networks.get(opts["network"]) is None:
        held = ", ".join(k for k, v in networks.items() if v is not None) if isinstance(networks, dict) else "nothing"
        raise UserError(f"{location} holds no '{opts['network']}' network (it has: {held}); give network=...")
    G = networks[opts["network"]].eval().requires_grad_(False).to(device)
    for attr in ("z_dim", "c_dim", "img_resolution", "img_channels"):
        if not hasattr(G, attr):
            raise UserError(f"{location}: the network has no '{attr}'; is this a stylegan2-ada-pytorch pickle?")
    teacher = StyleGAN2ADATeacher(path, G, opts)
    apply_common(teacher, opts)
    return teacher
