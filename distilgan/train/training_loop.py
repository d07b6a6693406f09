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

from distilgan.errors import UserError  # noqa: F401  (also the base of TrainingInterrupted)
from distilgan.train.batches import BatchSource
from distilgan.train.config import LoopConfig, RunConfig, config_to_dict, ema_beta
from distilgan.train.distributed import DistContext, all_reduce_mean, broadcast_from_main
from distilgan.train.ema import EMA, recompute_batchnorm
from distilgan.train.inputs import BN_STREAM, LatentInputs, ModelInputs, ZSampler  # noqa: F401  (BN_STREAM: bench)
from distilgan.train.precision import autocast, resolve_precision
from distilgan.train.state import capture_rng, restore_rng, save_state

STATE_PATH = Path("state") / "state.pt"
BN_BATCHES = 16
# A loss that stays non-finite this many steps in a row ends the run (gradients are zeroed meanwhile).
NONFINITE_PATIENCE = 10
# Test hook: SIGKILL this process right after the given step, to prove resume after a hard crash.
KILL_ENV = "DISTILGAN_TEST_KILL_AT_STEP"


class TrainingInterrupted(UserError):
    """SIGINT/SIGTERM during fit(): the state was saved; one line says how to continue."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)  # 130 for Ctrl-C, 143 for SIGTERM, as shells report them


class _StopSignals:
    """First SIGINT/SIGTERM: remember it (the loop saves and stops after the current step);
    a second one: stop at once, as Ctrl-C normally does."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            self.restore()
            raise KeyboardInterrupt
        self.received = signum

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


# -- the loop -----------------------------------------------------------------------------------
def lr_factor(step: int, decay_start: int | None, total_steps: int) -> float:
    """1 until ``decay_start``, then linearly to 0 at ``total_steps``."""
    if decay_start is None or step < decay_start or total_steps <= decay_start:
        return 1.0
    return max(0.0, 1.0 - (step - decay_start) / (total_steps - decay_start))


class Trainer:
    """Owns the optimisers, EMA, schedule, step counters and files of one run."""

    def __init__(self, config: RunConfig | LoopConfig, generator: nn.Module, discriminator: nn.Module, objective: Any,
                 source: BatchSource | None = None, run_dir: str | Path | None = None,
                 dist: DistContext | None = None, name: str = "distill", z_sampler: ZSampler | None = None,
                 metrics: Any = None, classes: list[int] | None = None, inputs: ModelInputs | None = None) -> None:
        if isinstance(config, LoopConfig):  # a bare loop (tests, benchmarks): a run of no particular kind
            config = RunConfig(loop=config)
        # the whole run's config is recorded in the state (for --resume); the loop reads its own section
        self.config, self.loop, self.objective, self.source, self.name = config, config.loop, objective, source, name
        loop = self.loop
        self.metrics = metrics
        # what G is fed outside the objective (grid, BN re-estimation): (z, labels) of the model's own z
        # distribution and classes (a store may hold a subset of the teacher's), unless told otherwise
        self.inputs = inputs or LatentInputs(generator, loop, z_sampler, classes)
        self.dist = dist or DistContext()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.G, self.D = generator.to(self.dist.device), discriminator.to(self.dist.device)
        # NHWC convolutions (oneDNN on CPU, tensor cores on CUDA), same function; None: the network's own choice
        self.channels_last = []
        for role, model in (("G", self.G), ("D", self.D)):
            wanted = loop.channels_last
            if wanted is None:
                wanted = bool(getattr(model, "prefers_channels_last", False))
            if wanted:
                model.to(memory_format=torch.channels_last)
                self.channels_last.append(role)
        if self.dist.distributed:  # every rank starts from rank 0's weights
            broadcast_from_main([t.data for t in [*self.G.state_dict().values(), *self.D.state_dict().values()]])
        betas = (loop.beta1, loop.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=loop.lr_g, betas=betas)
        # a generator-only objective (fine-tuning) keeps D fixed: no D step, no D optimiser
        self.train_d = bool(getattr(objective, "trains_discriminator", True))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=loop.lr_d, betas=betas) if self.train_d else None
        if not self.train_d:
            self.D.requires_grad_(False)
        # a fixed decay (ema_decay, older runs) or one from the half-life in images, set before each update
        self.ema = EMA(self.G, loop.ema_decay or 0.999, buffers=loop.ema_buffers) if loop.ema else None
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        requested = "bf16" if loop.amp and self.dist.device.type == "cuda" else loop.precision
        self.precision, self.precision_reason = resolve_precision(requested, self.dist.device, self.G, self.D,
                                                                  loop.batch_size // self.dist.world_size,
                                                                  getattr(self.inputs, "probe_loss", None))
        self.nonfinite_steps = 0
        steps_per_epoch = source.steps_per_epoch if source is not None else 1
        self.total_steps = loop.epochs * steps_per_epoch
        if loop.max_steps is not None:
            self.total_steps = min(self.total_steps, loop.max_steps)

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.dist.device)

    def _check_finite(self, loss: Tensor, what: str) -> None:
        """Count steps in a row whose loss is NaN/inf; past the patience the run stops with one line."""
        if bool(torch.isfinite(loss.detach()).all()):
            return
        self.nonfinite_steps += 1
        if self.nonfinite_steps >= NONFINITE_PATIENCE:
            from distilgan.errors import UserError  # noqa: F401  (also the base of TrainingInterrupted)

            raise UserError(f"the {what} loss has been NaN or infinite for {self.nonfinite_steps} steps in a row, up to "
                            f"step {self.step + 1} (lower --lr-g/--lr-d, try --precision fp32, or resume from an earlier "
                            "checkpoint)")

    def _update(self, loss: Tensor, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        loss.backward()
        params = [p for p in model.parameters() if p.requires_grad]
        if self.dist.distributed:
            for p in params:  # a parameter unused this step still joins the all-reduce
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            all_reduce_mean([p.grad for p in params], self.dist.world_size)
        # one bad batch must not poison Adam's moments (stylegan2-ada, EDM): non-finite gradients -> finite
        grads = [p.grad for p in params if p.grad is not None]
        for grad in grads:
            torch.nan_to_num(grad, nan=0.0, posinf=1e5, neginf=-1e5, out=grad)
        optimizer.step()

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One D update and (when due) one G update; returns the objective's named terms."""
        step = self.step
        factor = lr_factor(step, self.loop.lr_decay_start, self.total_steps)
        for group in self.opt_g.param_groups:
            group["lr"] = self.loop.lr_g * factor
        for group in self.opt_d.param_groups if self.opt_d is not None else []:
            group["lr"] = self.loop.lr_d * factor
        if self.dist.distributed:
            broadcast_from_main([*self.G.buffers(), *self.D.buffers()])

        finite_before = self.nonfinite_steps
        terms: dict[str, Tensor] = {}
        if self.train_d:
            self.G.requires_grad_(False)
            self.D.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            with self._autocast():
                d_loss, terms = self.objective.discriminator_loss(batch)
            self._check_finite(d_loss, "discriminator")
            self._update(d_loss, self.D, self.opt_d)

        if self.objective.generator_update_due(step):
            self.G.requires_grad_(True)
            self.D.requires_grad_(False)  # D only passes gradients through to G here
            self.opt_g.zero_grad(set_to_none=True)
            with self._autocast():
                g_loss, g_terms = self.objective.generator_loss(batch, step)
            if self.nonfinite_steps == finite_before:  # count a step once, whichever loss broke
                self._check_finite(g_loss, "generator")
            self._update(g_loss, self.G, self.opt_g)
            terms = {**terms, **g_terms}
            if self.ema is not None:
                if step < self.loop.ema_start:  # before ema_start the copy just follows G (BigGAN)
                    self.ema.follow(self.G)
                else:
                    beta = ema_beta(self.loop, self.loop.batch_size, step * self.loop.batch_size)  # images before it
                    if beta is not None:
                        self.ema.decay = beta
                    self.ema.update(self.G)
        if self.nonfinite_steps == finite_before:
            self.nonfinite_steps = 0  # a finite step ends the streak
        self.D.requires_grad_(self.train_d)
        self.step += 1
        # Detached: the loop keeps terms until the next logged step, and an attached term would keep
        # its whole autograd graph (activations of both networks) alive until then.
        return {**{name: value.detach() for name, value in terms.items()},
                "lr_g": torch.tensor(self.loop.lr_g * factor), "lr_d": torch.tensor(self.loop.lr_d * factor)}

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

    def shipped_model(self) -> nn.Module:
        """What a checkpoint holds: the inference model, with BN statistics re-estimated on its own
        outputs under ``ema_buffers: recompute`` (a copy; training goes on with the averaged ones)."""
        model = self.inference_model()
        if self.ema is None or self.loop.ema_buffers != "recompute":
            return model
        device, batch = self.dist.device, max(2, self.loop.batch_size // self.dist.world_size)
        return recompute_batchnorm(model, lambda i: self.inputs.bn_inputs(i, batch, device), BN_BATCHES)

    def grid_inputs(self) -> tuple[np.ndarray, ...]:
        return self.inputs.grid_inputs()

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        model = self.shipped_model()
        was_training = model.training
        model.eval()  # BatchNorm with running statistics, as at inference
        images = self.inputs.grid_images(model, self.dist.device)
        model.train(was_training)
        return images

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "world_size": self.dist.world_size,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "schedule": {"lr_g": self.loop.lr_g, "lr_d": self.loop.lr_d,
                         "lr_decay_start": self.loop.lr_decay_start, "total_steps": self.total_steps},
            "source": self.source.state_dict() if self.source is not None else {},
            "precision": self.precision,
            "objective": self.objective.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["world_size"]) != self.dist.world_size:
            raise UserError(f"--resume: 'world_size' is {self.dist.world_size} but the run was started with "
                            f"{state['world_size']} processes (resume with the same torchrun --nproc_per_node)")
        if self.loop.precision == "auto" and state.get("precision") in ("fp32", "bf16"):
            # a resumed run keeps the precision its probe chose at the start, so it stays one run
            self.precision, self.precision_reason = state["precision"], "as the run chose at its start"
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        if self.source is not None:
            self.source.load_state_dict(state["source"])
        self.objective.load_state_dict(state["objective"])
        restore_rng(state["rng"][self.dist.rank], self.objective.generators())

    def save_checkpoint(self) -> None:
        """Inference folders, then the training state (all ranks call: RNG states are gathered)."""
        self.last_save_time = time.monotonic()
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
            model = self.shipped_model()
            metadata = {"step": self.step, "epoch": self.epoch, "ema": self.ema is not None,
                        "ema_buffers": self.loop.ema_buffers if self.ema is not None else None}
            model.save_pretrained(self.run_dir / "checkpoints" / f"generator-{self.step:06d}", metadata=metadata)
            model.save_pretrained(self.run_dir / "generator", metadata=metadata)
            save_state({**self.state_dict(), "rng": every_rank}, self.run_dir / STATE_PATH)
            self._prune_checkpoints()
        if self.dist.distributed:
            import torch.distributed as dist

            dist.barrier()

    def evaluate_metrics(self, logger: Any) -> dict[str, Any] | None:
        """In-loop metrics of the shipped model (rank 0); a new best is saved as ``RUN/best/``."""
        record = None
        if self.metrics is not None and self.dist.is_main and self.run_dir is not None:
            from distilgan.train.loop_metrics import BEST_DIR

            model = self.shipped_model()
            record = self.metrics.evaluate(model, self.step, self.epoch, self.step * self.loop.batch_size)
            # the first per-epoch grid drawn with these weights (or later ones): for the GIF's caption
            record["grid_epoch"] = self.epoch + (1 if self.batch_in_epoch else 0)
            self.metrics.write(record)
            if logger is not None:
                logger.log(self.step, self.epoch, {f"metrics/{name}": float(record[name]) for name in self.metrics.names})
            if record["best"]:
                metadata = {"step": self.step, "epoch": self.epoch, "ema": self.ema is not None,
                            "best_metric": self.metrics.primary, "best_value": float(record[self.metrics.primary])}
                model.save_pretrained(self.run_dir / BEST_DIR, metadata=metadata)
        if self.metrics is not None and self.dist.distributed:
            import torch.distributed as dist

            dist.barrier()
        return record

    def _prune_checkpoints(self) -> None:
        """Keep the newest ``ckpt_keep`` step folders (None: all); generator/, best/ and the state stay."""
        keep = self.loop.ckpt_keep
        if not keep or self.run_dir is None:
            return
        import shutil

        folders = sorted((self.run_dir / "checkpoints").glob("generator-[0-9]*"))
        for old in folders[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _any_rank(self, *wanted: bool) -> tuple[bool, ...]:
        """Each flag, true if any rank sets it (a save or a stop must happen at the same step on every DDP
        rank); one all-reduce for all of them."""
        if not self.dist.distributed:
            return tuple(bool(w) for w in wanted)
        import torch.distributed as dist

        flags = torch.tensor([1.0 if w else 0.0 for w in wanted], device=self.dist.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return tuple(bool(f) for f in flags.tolist())

    # -- the whole run ------------------------------------------------------------------------------
    def fit(self, resumed: bool = False) -> dict[str, Any]:
        from distilgan.utils.progress import progress_bar

        from distilgan.train.logging import RunLogger

        if self.source is None or self.run_dir is None:
            raise ValueError("fit() needs a data source and a run folder")
        loop, source = self.loop, self.source
        logger = None
        if self.dist.is_main:
            logger = RunLogger(self.run_dir, resume_step=self.step if resumed else None)
            if resumed and self.metrics is not None:
                self.metrics.truncate(self.step)
        metric_every = loop.metric_every
        evaluated_at = -1

        def checkpoint_and_metrics() -> None:
            nonlocal evaluated_at
            self.save_checkpoint()
            if self.metrics is not None and not metric_every and evaluated_at != self.step:
                self.evaluate_metrics(logger)
                evaluated_at = self.step
        kill_at = int(os.environ.get(KILL_ENV, "0"))
        global_batch = loop.batch_size
        bar = progress_bar(total=self.total_steps, initial=self.step, unit="step", disable=not self.dist.is_main,
                   dynamic_ncols=True, desc=self.name)
        from distilgan.utils.energy import CostMeter

        meter = CostMeter()  # CPU-seconds (and joules where RAPL is readable) per sample, between logs
        last_time, last_step, grid_epoch = time.perf_counter(), self.step, -1
        # Terms seen since the last log, latest value of each: terms that only occur on some steps
        # (G's adversarial terms every gstep steps) reach the log even when no logged step has them.
        pending: dict[str, Tensor] = {}
        stop = _StopSignals()
        stop.install()
        self.last_save_time = started = time.monotonic()
        try:
            while self.step < self.total_steps:
                for batch in source.batches(self.epoch, skip=self.batch_in_epoch):
                    terms = self.train_step(batch)
                    pending.update(terms)
                    self.batch_in_epoch += 1
                    bar.update(1)
                    if self.step % loop.log_every == 0 or self.step == self.total_steps:
                        scalars, pending = self.reduce_terms(pending), {}
                        now = time.perf_counter()
                        scalars["samples_per_s"] = global_batch * (self.step - last_step) / max(now - last_time, 1e-9)
                        cost = meter.per_item(self.loop.batch_size // self.dist.world_size * (self.step - last_step))
                        scalars["cpu_s_per_sample"] = float(cost["cpu_s_per_item"])
                        if meter.energy_readable:
                            scalars["joules_per_sample"] = float(cost["joules_per_item"])
                        meter.reset()
                        last_time, last_step = now, self.step
                        if logger is not None:
                            logger.log(self.step, self.epoch, scalars)
                        postfix = {"samples/s": f"{scalars['samples_per_s']:.0f}"}
                        if "d/total" in scalars:  # a generator-only objective has no D terms
                            postfix["d"] = f"{scalars['d/total']:.3f}"
                        postfix["g"] = f"{scalars.get('g/total', float('nan')):.3f}"
                        bar.set_postfix(postfix)
                    every = loop.ckpt_every_steps
                    if every and self.step % every == 0 and self.step < self.total_steps:
                        checkpoint_and_metrics()  # mid-epoch is fine: resume skips the batches done
                    if self.metrics is not None and metric_every and self.step % metric_every == 0:
                        self.evaluate_metrics(logger)
                        evaluated_at = self.step
                    minutes = loop.ckpt_every_minutes
                    due = bool(minutes) and time.monotonic() - self.last_save_time >= 60 * minutes
                    budget = loop.max_minutes  # wall-time budget: end here as if this were the last step
                    spent = bool(budget) and time.monotonic() - started >= 60 * budget
                    flags = self._any_rank(due, stop.received is not None, spent)
                    if flags[2]:
                        self.total_steps = self.step  # the final grid, save and metrics below run as usual
                    if flags[0] and self.step < self.total_steps and not flags[1]:
                        checkpoint_and_metrics()  # by wall time too (a slow machine never loses much work)
                    if flags[1]:
                        self.save_checkpoint()
                        if logger is not None:
                            logger.flush()
                        name = signal.Signals(stop.received).name if stop.received else "a signal"
                        raise TrainingInterrupted(
                            f"{name} at step {self.step}: training state and checkpoint saved in {self.run_dir}; "
                            f"continue with: distilgan {self.name} --out {self.run_dir} --resume", stop.received or 15)
                    if kill_at and self.step == kill_at:
                        if logger is not None:
                            logger.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                    if self.step >= self.total_steps:
                        break
                if self.batch_in_epoch >= source.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.epoch % loop.grid_every == 0 and logger is not None:
                        logger.grid(self.epoch, self.step, self.sample_grid(), nrow=self.inputs.grid_nrow)
                        grid_epoch = self.epoch
                    if self.epoch % loop.ckpt_every == 0 and self.step < self.total_steps:
                        checkpoint_and_metrics()
                elif self.step < self.total_steps:
                    raise RuntimeError(f"the data ended after {self.batch_in_epoch} of {source.steps_per_epoch} "
                                       f"batches in epoch {self.epoch}")
            if logger is not None and grid_epoch != self.epoch:  # the run ended between grids: show the end
                label = self.epoch + (1 if self.batch_in_epoch else 0)  # a partial epoch counts as the next
                logger.grid(label, self.step, self.sample_grid(), nrow=self.inputs.grid_nrow)
            self.save_checkpoint()
            if self.metrics is not None and evaluated_at != self.step:
                self.evaluate_metrics(logger)
        finally:
            stop.restore()
            bar.close()
            if logger is not None:
                logger.close()
        result = {"step": self.step, "epoch": self.epoch, "run_dir": str(self.run_dir)}
        if self.metrics is not None and self.metrics.best is not None:
            result["best"] = {"step": self.metrics.best["step"], self.metrics.primary: self.metrics.best[self.metrics.primary],
                              "summary": self.metrics.summary()}
        return result
