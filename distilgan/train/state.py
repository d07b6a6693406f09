"""Training state on disk: ``RUN/state/state.pt``, loadable with ``torch.load(weights_only=True)``.

The state holds what an inference folder does not: D, the raw G, the EMA copy, both optimisers, the
LR schedule, the step / epoch / data position and every random stream. RNG states are stored as
tensors and ints (never numpy objects or pickled classes) so the safe ``weights_only`` loader reads
them, and a killed run resumes with exactly the random numbers it would have drawn.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilgan.errors import UserError
from distilgan.utils.atomic import atomic_path

STATE_FORMAT = 1


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's random streams: python, numpy, torch CPU/CUDA and our own generators."""
    version, mt_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    for name, gen in (generators or {}).items():
        if name in state["generators"]:
            gen.set_state(state["generators"][name])


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write atomically: after kill -9 the file is the previous complete state or the new one."""
    state = {"format": STATE_FORMAT, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _state_problem(path: Path, err: Exception) -> str:
    """What is wrong with a state file torch cannot load, in words: the real cause, not a class name."""
    import zipfile

    size = path.stat().st_size
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    if size == 0:
        return "the file is empty (a save was cut off before it wrote anything); resume from a copy or start again"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(4)
        if head[:2] == b"PK":
            return (f"the file is truncated ({size:,} bytes, its zip directory is missing: the save was cut off); "
                    "resume from a copy or start again")
        return f"not a torch.save file ({size:,} bytes, starts with {head!r}); is this the right path?"
    if "weights_only" in detail or "Unsupported global" in detail:
        return f"it holds objects a safe load refuses ({detail}); it was not written by distilgan"
    return f"the file is damaged ({size:,} bytes; torch says: {detail})"


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no training state at {path} (nothing to --resume; start the run without --resume)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt or foreign file: a one-line message, not a traceback
        raise UserError(f"cannot read training state {path}: {_state_problem(path, err)}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a distilgan training state of format {STATE_FORMAT}")
    return state
