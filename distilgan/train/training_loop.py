"""The one training loop for every GAN in distilgan: data, optimisers, LR schedule, EMA, AMP, DDP,
checkpoint / exact resume, logging and grids. What is minimised lives in an objective (losses.py).

Per step: set the LR of this step; D update (objective.discriminator_loss); G update when the
objective says so (objective.generator_loss), then the EMA copy. DDP is plain ``torch.distributed``:
gradients are averaged by one all-reduce per network after backward (so an objective may call G and D
as often as it likes before backward), buffers (BatchNorm statistics) follow rank 0 like DDP's
``broadcast_buffers``, and only rank 0 writes files.

Run folder: ``config.yaml``, ``log.jsonl``, ``tb/``, ``grids/epoch-XXXX.png``, ``generator/`` (latest
inference folder, EMA weights when EMA is on), ``checkpoints/generator-XXXXXX/`` (by step) and
``state/state.pt`` (everything needed to continue exactly).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distilgan.errors import UserError
from distilgan.train.batches import BatchSource
from distilgan.train.config import TrainConfig, config_to_dict
from distilgan.train.distributed import DistContext, all_reduce_mean, broadcast_from_main
from distilgan.train.ema import EMA
from distilgan.train.state import capture_rng, restore_rng, save_state
from distilgan.utils.noise import rng, sample_z

STATE_PATH = Path("state") / "state.pt"
GRID_STREAM = 0x6121D  # seeds the fixed z of the per-epoch grid
MAX_GRID_ROWS = 32  # one row per class, at most this many classes (evenly spread) in the grid
# Test hook: SIGKILL this process right after the given step, to prove resume after a hard crash.
KILL_ENV = "DISTILGAN_TEST_KILL_AT_STEP"


# -- the loop -----------------------------------------------------------------------------------
def lr_factor(step: int, decay_start: int | None, total_steps: int) -> float:
    """1 until ``decay_start``, then linearly to 0 at ``total_steps``."""
    if decay_start is None or step < decay_start or total_steps <= decay_start:
        return 1.0
    return max(0.0, 1.0 - (step - decay_start) / (total_steps - decay_start))


class Trainer:
    """Owns the optimisers, EMA, schedule, step counters and files of one run."""

    def __init__(self, config: TrainConfig, generator: nn.Module, discriminator: nn.Module, objective: Any,
                 source: BatchSource | None = None, run_dir: str | Path | None = None,
                 dist: DistContext | None = None, name: str = "distill") -> None:
        self.config, self.objective, self.source, self.name = config, objective, source, name
        self.dist = dist or DistContext()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.G, self.D = generator.to(self.dist.device), discriminator.to(self.dist.device)
        if self.dist.distributed:  # every rank starts from rank 0's weights
            broadcast_from_main([t.data for t in [*self.G.state_dict().values(), *self.D.state_dict().values()]])
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr_d, betas=betas)
        self.ema = EMA(self.G, config.ema_decay) if config.ema else None
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.use_amp = config.amp and self.dist.device.type == "cuda"
        steps_per_epoch = source.steps_per_epoch if source is not None else 1
        self.total_steps = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _update(self, loss: Tensor, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        loss.backward()
        if self.dist.distributed:
            params = [p for p in model.parameters() if p.requires_grad]
            for p in params:  # a parameter unused this step still joins the all-reduce
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            all_reduce_mean([p.grad for p in params], self.dist.world_size)
        optimizer.step()

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One D update and (when due) one G update; returns the objective's named terms."""
        step = self.step
        factor = lr_factor(step, self.config.lr_decay_start, self.total_steps)
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.lr_g * factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.lr_d * factor
        if self.dist.distributed:
            broadcast_from_main([*self.G.buffers(), *self.D.buffers()])

        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            d_loss, terms = self.objective.discriminator_loss(batch)
        self._update(d_loss, self.D, self.opt_d)

        if self.objective.generator_update_due(step):
            self.G.requires_grad_(True)
            self.D.requires_grad_(False)  # D only passes gradients through to G here
            self.opt_g.zero_grad(set_to_none=True)
            with self._autocast():
                g_loss, g_terms = self.objective.generator_loss(batch, step)
            self._update(g_loss, self.G, self.opt_g)
            terms = {**terms, **g_terms}
            if self.ema is not None:
                if step < self.config.ema_start:  # before ema_start the copy just follows G (BigGAN)
                    self.ema.shadow.load_state_dict(self.G.state_dict())
                else:
                    self.ema.update(self.G)
        self.D.requires_grad_(True)
        self.step += 1
        return {**terms, "lr_g": torch.tensor(self.config.lr_g * factor), "lr_d": torch.tensor(self.config.lr_d * factor)}

    def reduce_terms(self, terms: dict[str, Tensor]) -> dict[str, float]:
        """Named terms as floats, averaged over ranks (one sync; call only on logged steps)."""
        names = sorted(terms)
        values = torch.stack([terms[n].detach().float().reshape(()).to(self.dist.device) for n in names])
        if self.dist.distributed:
            all_reduce_mean([values], self.dist.world_size)
        return dict(zip(names, values.tolist()))

    # -- grids and checkpoints ----------------------------------------------------------------------
    def inference_model(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else self.G

    def grid_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed z and labels of the per-epoch grid: one row per class, ``grid_columns`` per row."""
        num_classes, columns = int(self.G.num_classes), self.config.grid_columns
        classes = np.unique(np.linspace(0, num_classes - 1, min(num_classes, MAX_GRID_ROWS)).round().astype(np.int64))
        labels = np.repeat(classes, columns)
        z = sample_z(rng(self.config.seed, GRID_STREAM), len(labels), int(self.G.z_dim))
        return z, labels

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        model = self.inference_model()
        was_training = model.training
        model.eval()  # BatchNorm with running statistics, as at inference
        z, labels = self.grid_inputs()
        device = self.dist.device
        images = model(torch.from_numpy(z).to(device), torch.from_numpy(labels).to(device)).float().cpu().numpy()
        model.train(was_training)
        return images

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "world_size": self.dist.world_size,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "schedule": {"lr_g": self.config.lr_g, "lr_d": self.config.lr_d,
                         "lr_decay_start": self.config.lr_decay_start, "total_steps": self.total_steps},
            "source": self.source.state_dict() if self.source is not None else {},
            "objective": self.objective.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["world_size"]) != self.dist.world_size:
            raise UserError(f"--resume: 'world_size' is {self.dist.world_size} but the run was started with "
                            f"{state['world_size']} processes (resume with the same torchrun --nproc_per_node)")
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        if self.source is not None:
            self.source.load_state_dict(state["source"])
        self.objective.load_state_dict(state["objective"])
        restore_rng(state["rng"][self.dist.rank], self.objective.generators())

    def save_checkpoint(self) -> None:
        """Inference folders, then the training state (all ranks call: RNG states are gathered)."""
        rng_state = capture_rng(self.objective.generators())
        if self.dist.distributed:
            import torch.distributed as dist

            every_rank: list[Any] = [None] * self.dist.world_size
            checksum = float(sum(p.detach().double().sum() for p in [*self.G.parameters(), *self.D.parameters()]))
            dist.all_gather_object(every_rank, (rng_state, checksum))
            sums = [s for _, s in every_rank]
            if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):  # averaged gradients keep ranks equal
                raise RuntimeError(f"DDP ranks hold different weights (parameter sums {sums})")
            every_rank = [state for state, _ in every_rank]
        else:
            every_rank = [rng_state]
        if self.dist.is_main and self.run_dir is not None:
            model = self.inference_model()
            metadata = {"step": self.step, "epoch": self.epoch, "ema": self.ema is not None}
            model.save_pretrained(self.run_dir / "checkpoints" / f"generator-{self.step:06d}", metadata=metadata)
            model.save_pretrained(self.run_dir / "generator", metadata=metadata)
            save_state({**self.state_dict(), "rng": every_rank}, self.run_dir / STATE_PATH)
        if self.dist.distributed:
            import torch.distributed as dist

            dist.barrier()

    # -- the whole run ------------------------------------------------------------------------------
    def fit(self, resumed: bool = False) -> dict[str, Any]:
        from tqdm import tqdm

        from distilgan.train.logging import RunLogger

        if self.source is None or self.run_dir is None:
            raise ValueError("fit() needs a data source and a run folder")
        config, source = self.config, self.source
        logger = None
        if self.dist.is_main:
            logger = RunLogger(self.run_dir, resume_step=self.step if resumed else None)
        kill_at = int(os.environ.get(KILL_ENV, "0"))
        global_batch = config.batch_size
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=not self.dist.is_main,
                   dynamic_ncols=True, desc=self.name)
        last_time, last_step, grid_epoch = time.perf_counter(), self.step, -1
        # Terms seen since the last log, latest value of each: terms that only occur on some steps
        # (G's adversarial terms every gstep steps) reach the log even when no logged step has them.
        pending: dict[str, Tensor] = {}
        try:
            while self.step < self.total_steps:
                for batch in source.batches(self.epoch, skip=self.batch_in_epoch):
                    terms = self.train_step(batch)
                    pending.update(terms)
                    self.batch_in_epoch += 1
                    bar.update(1)
                    if self.step % config.log_every == 0 or self.step == self.total_steps:
                        scalars, pending = self.reduce_terms(pending), {}
                        now = time.perf_counter()
                        scalars["samples_per_s"] = global_batch * (self.step - last_step) / max(now - last_time, 1e-9)
                        last_time, last_step = now, self.step
                        if logger is not None:
                            logger.log(self.step, self.epoch, scalars)
                        bar.set_postfix({"samples/s": f"{scalars['samples_per_s']:.0f}",
                                         "d": f"{scalars['d/total']:.3f}",
                                         "g": f"{scalars.get('g/total', float('nan')):.3f}"})
                    every = config.ckpt_every_steps
                    if every and self.step % every == 0 and self.step < self.total_steps:
                        self.save_checkpoint()  # mid-epoch is fine: resume skips the batches done
                    if kill_at and self.step == kill_at:
                        if logger is not None:
                            logger.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                    if self.step >= self.total_steps:
                        break
                if self.batch_in_epoch >= source.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.epoch % config.grid_every == 0 and logger is not None:
                        logger.grid(self.epoch, self.step, self.sample_grid(), nrow=config.grid_columns)
                        grid_epoch = self.epoch
                    if self.epoch % config.ckpt_every == 0 and self.step < self.total_steps:
                        self.save_checkpoint()
                elif self.step < self.total_steps:
                    raise RuntimeError(f"the data ended after {self.batch_in_epoch} of {source.steps_per_epoch} "
                                       f"batches in epoch {self.epoch}")
            if logger is not None and grid_epoch != self.epoch:  # the run ended between grids: show the end
                label = self.epoch + (1 if self.batch_in_epoch else 0)  # a partial epoch counts as the next
                logger.grid(label, self.step, self.sample_grid(), nrow=config.grid_columns)
            self.save_checkpoint()
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        return {"step": self.step, "epoch": self.epoch, "run_dir": str(self.run_dir)}
