"""What a run writes while it trains: ``RUN/log.jsonl``, TensorBoard events in ``RUN/tb``, grids.

Only DDP rank 0 builds a :class:`RunLogger`. On resume the JSON log is cut back to the resumed step
(a killed run may have logged steps past its last checkpoint) and TensorBoard purges those steps, so
both read as one uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.utils.atomic import atomic_write_text
from distilgan.utils.images import float_to_uint8, make_grid, nchw_to_nhwc, save_png
from distilgan.utils.extras import need

LOG_NAME = "log.jsonl"
GRID_DIR = "grids"
TB_DIR = "tb"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a JSON-lines file (a line cut by kill -9 is skipped); [] if absent."""
    path = Path(path)
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of ``RUN/log.jsonl``."""
    return read_jsonl(Path(run_dir) / LOG_NAME)


def truncate_log(run_dir: str | Path, last_step: int) -> None:
    """Keep the records of steps <= ``last_step`` (what the resumed state has really done)."""
    path = Path(run_dir) / LOG_NAME
    if path.exists():
        kept = [r for r in read_log(run_dir) if int(r.get("step", 0)) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def grid_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / GRID_DIR / f"epoch-{epoch:04d}.png"


class RunLogger:
    """JSON lines + TensorBoard scalars and images."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_log(self.run_dir, resume_step)
        self.jsonl = open(self.run_dir / LOG_NAME, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            need("tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.tb = SummaryWriter(log_dir=str(self.run_dir / TB_DIR), purge_step=purge)

    def log(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        record = {"step": step, "epoch": epoch, "time": round(time.time(), 3), **scalars}
        # one write + flush per record: after kill -9 at most the last line is incomplete
        self.jsonl.write(json.dumps(record, sort_keys=True) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for name, value in scalars.items():
                self.tb.add_scalar(name, value, step)

    def grid(self, epoch: int, step: int, images: np.ndarray, nrow: int) -> Path:
        """Save float NCHW [-1, 1] ``images`` as ``RUN/grids/epoch-XXXX.png`` (and in TensorBoard)."""
        grid = make_grid(float_to_uint8(nchw_to_nhwc(images)), nrow=nrow)
        path = grid_path(self.run_dir, epoch)
        save_png(grid, path)
        if self.tb is not None:
            self.tb.add_image("grid", grid, step, dataformats="HWC")
        return path

    def flush(self) -> None:
        self.jsonl.flush()
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
