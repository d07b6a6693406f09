"""Per-image seeds: ``0-3,7`` lists, and one z per seed.

With a seed list every image has its own seed, so any image of a grid can be made again alone
(``generate --seeds 7 --labels cat`` is the cat image of seed 7 in ``--seeds 0-99``). The list syntax
is the one of StyleGAN2-ADA's ``generate.py``: comma-separated numbers and inclusive ranges ``a-b``.
The z of seed s is one draw of the model's z distribution from ``rng(s)``, whatever else is asked.
"""

from __future__ import annotations

import argparse
import re
from typing import Sequence

import numpy as np

from distilgan.errors import UserError
from distilgan.utils.noise import ZDistribution, rng

SEED_MAX = 2**63 - 1  # numpy's SeedSequence takes any integer >= 0; torch.manual_seed below 2**63
MAX_SEEDS = 100_000  # a typo such as 0-1000000000 should not allocate for minutes
_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(text: str, limit: int = MAX_SEEDS, seed_max: int = SEED_MAX) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]`` (order kept, repeats allowed); UserError on anything else."""
    seeds: list[int] = []
    parts = str(text).split(",")
    for part in parts:
        match = _PART.match(part)
        if not match:
            raise UserError(f"seed list '{text}': '{part.strip()}' is not a seed or a range a-b of seeds >= 0 (e.g. 0-3,7)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise UserError(f"seed list '{text}': range {low}-{high} runs backwards (write {high}-{low})")
        if high > seed_max:
            raise UserError(f"seed list '{text}': seed {high} is above the largest seed, {seed_max}")
        if len(seeds) + high - low + 1 > limit:
            raise UserError(f"seed list '{text}' has more than {limit:,} seeds (ask for fewer)")
        seeds.extend(range(low, high + 1))
    return seeds


def seed_list(text: str) -> list[int]:
    """argparse ``type=`` for ``--seeds``: the error becomes ``--seeds must be ...`` in one line."""
    try:
        return parse_seeds(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(f"must be seeds and ranges like 0-3,7 ({err})") from None


def z_for_seeds(distribution: ZDistribution, seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """float32 (len(seeds), z_dim): row i drawn from seed ``seeds[i]`` alone."""
    if len(seeds) == 0:
        return np.zeros((0, z_dim), np.float32)
    return np.concatenate([distribution.sample(rng(int(s)), 1, z_dim) for s in seeds])


__all__ = ["MAX_SEEDS", "SEED_MAX", "parse_seeds", "seed_list", "z_for_seeds"]
