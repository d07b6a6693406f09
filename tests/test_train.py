"""The training loop, the distillation objective, `distilgan distill` and `distilgan gif`.

Everything runs on tiny models (ngf = ndf = project_dim = 16) and a 48-sample 16x16 store made here
with a small in-test teacher, so the whole file stays well inside its time budget on 2 CPU cores.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distilgan.cli import main as distilgan_main
from distilgan.store import write_store
from distilgan.teachers.base import Teacher
from distilgan.train.config import LoopConfig, load_yaml, resolve_run_config
from distilgan.train.ema import EMA
from distilgan.train.logging import read_log
from distilgan.train.losses import FEATURE_WEIGHTS, DistillationObjective, feature_l1
from distilgan.train.state import capture_rng, load_state, restore_rng
from distilgan.train.training_loop import KILL_ENV, lr_factor

Z_DIM, CLASSES, RES = 16, 3, 16
TINY = ["--ngf", "16", "--ndf", "16", "--project-dim", "16", "--batch-size", "16", "--workers", "0",
        "--log-every", "1", "--seed", "1", "--gstep", "2", "--ckpt-every", "1", "--precision", "fp32"]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class TinyTeacher(Teacher):
    """Linear map of z per class, through tanh: deterministic, no weights on disk."""

    spec = "test:tiny"

    def __init__(self, num_classes: int = CLASSES, resolution: int = RES) -> None:
        self.z_dim, self.num_classes, self.resolution, self.channels = Z_DIM, num_classes, resolution, 3
        self.class_names = [f"class{i}" for i in range(num_classes)]
        gen = np.random.default_rng(0)
        self.weights = gen.standard_normal((num_classes, Z_DIM, 3 * resolution**2)).astype(np.float32) / Z_DIM**0.5

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        pixels = np.tanh(np.einsum("nz,nzp->np", z, self.weights[labels]))
        return pixels.reshape(len(z), 3, self.resolution, self.resolution)

    def fingerprint(self) -> str:
        return "tiny-test-teacher"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 spinning threads per process cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: object) -> tuple[int, str]:
    """In-process ``distilgan ARGS`` for module fixtures (the ``cli`` fixture is per test)."""
    return distilgan_main([str(a) for a in args]), ""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "tiny"
    write_store(TinyTeacher(), path, per_class=16, shard_size=20, progress=False)  # 48 samples, 3 shards
    return path


@pytest.fixture(scope="module")
def real_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real") / "real.npz"
    gen = np.random.default_rng(3)
    images = gen.integers(0, 256, (40, RES, RES, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(40) % CLASSES)
    return path


@pytest.fixture(scope="module")
def reference_run(store: Path, real_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch run (9 steps) with real data, checkpoint every epoch."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    code, _ = run_cli("distill", "--data", store, "--out", out, "--real", real_npz, "--epochs", "3", *TINY)
    assert code == 0
    return out


# -- objective, schedule, EMA, state, config (no CLI) -----------------------------------------------
def tiny_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from distilgan.models import DiStyleGANDiscriminator, DiStyleGANGenerator

    torch.manual_seed(0)
    return (DiStyleGANGenerator(Z_DIM, CLASSES, 16, 16, RES, 3), DiStyleGANDiscriminator(CLASSES, 16, 16, RES, 3))


def test_objective_terms_and_weights() -> None:
    G, D = tiny_models()
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, gstep=3, lambda_pixel=0.5,
                                      pixel_schedule="epoch-linear", pixel_decay=0.1, steps_per_epoch=2)
    batch = {"z": torch.randn(6, Z_DIM), "labels": torch.arange(6) % CLASSES,
             "teacher_images": torch.rand(6, 3, RES, RES) * 2 - 1}
    d_total, d_terms = objective.discriminator_loss(batch)
    assert set(d_terms) == {"d/teacher_real", "d/student_fake", "d/total"}
    assert torch.allclose(d_total, d_terms["d/teacher_real"] + d_terms["d/student_fake"])
    g_total, g_terms = objective.generator_loss(batch, step=3)  # adversarial step (3 % 3 == 0)
    assert {"g/gan", "g/gan_fresh", "g/feature", "g/pixel"} <= set(g_terms)
    lam = 0.5 - 0.1 * 1  # step 3 is in epoch 1 at 2 steps per epoch: decayed once
    expected = g_terms["g/feature"] + lam * g_terms["g/pixel"] + 0.01 * (g_terms["g/gan"] + 0.2 * g_terms["g/gan_fresh"])
    assert torch.allclose(g_total, expected)
    _, g_terms = objective.generator_loss(batch, step=4)
    assert "g/gan" not in g_terms and objective.lambda_pixel_at(100) == 0.0
    # with real data D gets the weighted real hinge term and G's fresh z uses the real labels
    batch.update(real_images=torch.rand(4, 3, RES, RES) * 2 - 1, real_labels=torch.tensor([0, 1, 2, 0]))
    d_total, d_terms = objective.discriminator_loss(batch)
    assert torch.allclose(d_total, d_terms["d/teacher_real"] + d_terms["d/student_fake"]
                          + 0.2 * (d_terms["d/real"] + d_terms["d/real_fake"]))
    # feature L1 weights 1/16, 1/8, 1/4, 1 and teacher features detached
    student = [torch.ones(2, 1, requires_grad=True) for _ in range(4)]
    teacher = [torch.zeros(2, 1, requires_grad=True) for _ in range(4)]
    loss = feature_l1(student, teacher)
    assert math.isclose(loss.item(), sum(FEATURE_WEIGHTS))
    loss.backward()
    assert all(t.grad is None for t in teacher) and student[3].grad is not None


def test_student_learns_the_teacher_on_a_fixed_batch() -> None:
    """Sanity: the loop + objective pull G towards the teacher images (pixel L1 drops)."""
    from distilgan.train.training_loop import Trainer

    G, D = tiny_models()
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, lambda_pixel=1.0)
    trainer = Trainer(LoopConfig(lr_g=2e-3, lr_d=2e-4), G, D, objective)
    teacher = TinyTeacher()
    z = np.random.default_rng(1).standard_normal((12, Z_DIM)).astype(np.float32)
    labels = np.arange(12) % CLASSES
    batch = {"z": torch.from_numpy(z), "labels": torch.from_numpy(labels),
             "teacher_images": torch.from_numpy(teacher.generate(z, labels))}
    pixel = [trainer.train_step(batch)["g/pixel"].item() for _ in range(30)]
    assert trainer.step == 30 and trainer.ema.num_updates == 30
    assert np.mean(pixel[-5:]) < 0.85 * np.mean(pixel[:5]), pixel  # measured ~0.8 after 30 steps


def test_balanced_fresh_labels_without_real_data() -> None:
    G, D = tiny_models()
    objective = DistillationObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES)
    labels = objective.balanced_labels(9, torch.device("cpu"))
    assert torch.bincount(labels, minlength=CLASSES).tolist() == [3, 3, 3]


def test_lr_schedule_ema_and_rng_state(tmp_path: Path) -> None:
    assert lr_factor(5, None, 100) == 1.0
    assert lr_factor(49, 50, 100) == 1.0 and lr_factor(75, 50, 100) == 0.5 and lr_factor(100, 50, 100) == 0.0
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9, warmup=False)
    before = ema.shadow.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.shadow.weight, 0.9 * before + 0.1 * model.weight)
    # RNG states round-trip through a weights_only file
    gen = torch.Generator().manual_seed(5)
    state = capture_rng({"noise": gen})
    torch.save(state, tmp_path / "rng.pt")
    expected = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), {"noise": gen})
    assert (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()) == expected


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    from distilgan.errors import UserError

    config_file = tmp_path / "c.yaml"
    config_file.write_text("lr-g: 1.0e-3\nbatch_size: 64\nema: false\n")
    config = resolve_run_config("distill", {"batch_size": 32, "gstep": None}, load_yaml(config_file))
    assert (config.loop.lr_g, config.loop.batch_size, config.loop.ema, config.objective.gstep) == (1e-3, 32, False, 10)
    config_file.write_text("learning_rate: 1\n")
    with pytest.raises(UserError, match="learning_rate"):
        load_yaml(config_file)
    with pytest.raises(UserError, match="beta1"):
        resolve_run_config("distill", {"beta1": 1.5})


# -- distilgan distill -------------------------------------------------------------------------------
def test_distill_logs_every_term_and_writes_run(reference_run: Path) -> None:
    from distilgan.models import DiStyleGANGenerator

    records = read_log(reference_run)
    assert [r["step"] for r in records] == list(range(1, 10))
    for record in records:
        for term in ("d/teacher_real", "d/student_fake", "d/real", "d/real_fake", "d/total",
                     "g/feature", "g/pixel", "g/total", "lr_g", "lr_d", "samples_per_s"):
            assert math.isfinite(record[term]), term
        adversarial = (record["step"] - 1) % 2 == 0  # --gstep 2 on 0-based steps
        assert ("g/gan" in record) == adversarial and ("g/gan_fresh" in record) == adversarial
    assert records[0]["d/total"] != records[-1]["d/total"]
    assert [p.name for p in sorted((reference_run / "grids").glob("*.png"))] == [
        "epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    assert (reference_run / "checkpoints" / "generator-000003" / "model.safetensors").exists()
    assert any((reference_run / "tb").iterdir())
    generator = DiStyleGANGenerator.from_pretrained(reference_run / "generator")
    assert generator.metadata["step"] == 9 and generator.metadata["ema"] is True
    images = generator(torch.randn(4, Z_DIM), torch.tensor([0, 1, 2, 0]))
    assert images.shape == (4, 3, RES, RES) and images.abs().max() <= 1
    state = load_state(reference_run / "state" / "state.pt")  # weights_only=True inside
    assert state["step"] == 9 and state["epoch"] == 3 and state["ema"] is not None
    assert {"python", "numpy", "torch", "cuda", "generators"} <= set(state["rng"][0])
    config = load_yaml(reference_run / "config.yaml")
    assert config["ngf"] == 16 and config["batch_size"] == 16 and config["gstep"] == 2 and config["real"]


def test_resume_after_kill_matches_uninterrupted_run(store: Path, real_npz: Path, reference_run: Path,
                                                     tmp_path: Path, cli) -> None:
    out = tmp_path / "killed"
    args = ["distill", "--data", store, "--out", out, "--real", real_npz, "--epochs", "3", *TINY]
    # hard crash (SIGKILL) after step 5: the last state is the end of epoch 1 (step 3)
    proc = subprocess.run([sys.executable, "-m", "distilgan", *map(str, args)], capture_output=True, text=True,
                          env={**SUBPROCESS_ENV, KILL_ENV: "5"}, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_state(out / "state" / "state.pt")["step"] == 3
    assert max(r["step"] for r in read_log(out)) == 5  # steps 4-5 were logged, then lost
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    resumed, reference = read_log(out), read_log(reference_run)
    assert [r["step"] for r in resumed] == list(range(1, 10))  # the lost steps' records were replaced
    for mine, theirs in zip(resumed[3:], reference[3:]):  # steps 4..9, first of all 4, 5, 6
        for term, value in theirs.items():
            if term.startswith(("d/", "g/", "lr_")):
                assert mine[term] == pytest.approx(value, rel=1e-5, abs=1e-6), (mine["step"], term)


def test_resume_mid_epoch_and_extend(store: Path, real_npz: Path, reference_run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "short"
    args = ["distill", "--data", store, "--out", out, "--real", real_npz, "--epochs", "3", *TINY]
    code, _, err = cli(*args, "--max-steps", "4")  # ends (and saves) one batch into epoch 2
    assert code == 0, err
    state = load_state(out / "state" / "state.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    code, _, err = cli(*args, "--max-steps", "9", "--resume")  # a longer run is allowed on resume
    assert code == 0, err
    resumed, reference = read_log(out), read_log(reference_run)
    assert [r["step"] for r in resumed] == list(range(1, 10))
    for mine, theirs in zip(resumed[4:], reference[4:]):
        assert mine["g/total"] == pytest.approx(theirs["g/total"], rel=1e-5, abs=1e-6), mine["step"]
        assert mine["d/total"] == pytest.approx(theirs["d/total"], rel=1e-5, abs=1e-6), mine["step"]


def test_resume_refuses_other_settings(reference_run: Path, store: Path, cli) -> None:
    base = ["distill", "--data", store, "--out", reference_run]
    code, _, err = cli(*base, "--ngf", "32", "--resume")
    assert code == 2 and "'ngf'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(*base, "--batch-size", "8", "--resume")
    assert code == 2 and "'batch_size'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(*base)  # a finished run folder is not silently overwritten
    assert code == 2 and "--resume" in err
    code, out, _ = cli(*base, "--resume")  # same settings: nothing left to do
    assert code == 0 and "already finished" in out


def test_store_and_real_data_must_agree(store: Path, tmp_path: Path, cli) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((20, RES, RES, 3), np.uint8), labels=np.arange(20) % 5)
    code, _, err = cli("distill", "--data", store, "--out", tmp_path / "run", "--real", wrong, *TINY)
    assert code == 2 and "has 5 classes but the distillation set has 3" in err and len(err.strip().splitlines()) == 1
    small = tmp_path / "small.npz"
    np.savez(small, images=np.zeros((20, 8, 8, 3), np.uint8), labels=np.arange(20) % CLASSES)
    code, _, err = cli("distill", "--data", store, "--out", tmp_path / "run", "--real", small, *TINY)
    assert code == 2 and "resolution" in err and len(err.strip().splitlines()) == 1


def test_ddp_two_cpu_processes(store: Path, tmp_path: Path) -> None:
    from distilgan.models import DiStyleGANGenerator

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "distilgan", "distill", "--data", str(store), "--out", str(out), "--epochs", "2", *TINY]
    proc = subprocess.run(command, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_state(out / "state" / "state.pt")
    assert state["world_size"] == 2 and state["step"] == 6 and len(state["rng"]) == 2  # 48 / 16 = 3 steps/epoch
    # the two ranks drew different fresh noise, but trained one shared model
    assert not torch.equal(state["rng"][0]["generators"]["objective_noise"], state["rng"][1]["generators"]["objective_noise"])
    generator = DiStyleGANGenerator.from_pretrained(out / "generator")
    assert generator(torch.randn(2, Z_DIM), torch.tensor([0, 2])).shape == (2, 3, RES, RES)
    assert [r["step"] for r in read_log(out)] == list(range(1, 7))  # only rank 0 writes the log


# -- distilgan gif -----------------------------------------------------------------------------------
def test_gif_from_grids(reference_run: Path, tmp_path: Path, cli) -> None:
    from PIL import Image

    target = tmp_path / "evolution.gif"
    code, out, err = cli("gif", reference_run, "--out", target, "--fps", "5")
    assert code == 0, err
    with Image.open(target) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
        first = np.asarray(gif.convert("RGB"))
        gif.seek(2)
        assert np.asarray(gif.convert("RGB")).shape == first.shape
    (tmp_path / "empty").mkdir()
    code, _, err = cli("gif", tmp_path / "empty")
    assert code == 2 and "no grids" in err


def test_terms_of_some_steps_reach_a_sparser_log(store: Path, tmp_path: Path, cli) -> None:
    """With the defaults' shape (adversarial G terms every gstep steps, logging every log_every steps, the
    two never on the same step) the log still carries the adversarial terms: their latest values."""
    out = tmp_path / "sparse-log"
    args = list(TINY)
    args[args.index("--log-every") + 1], args[args.index("--gstep") + 1] = "4", "4"
    code, _, err = cli("distill", "--data", store, "--out", out, "--max-steps", "8", *args)
    assert code == 0, err
    records = read_log(out)
    assert [r["step"] for r in records] == [4, 8]  # adversarial steps are 1 and 5 (0-based 0 and 4)
    assert all(math.isfinite(r["g/gan"]) and math.isfinite(r["g/gan_fresh"]) for r in records)
