"""`distilgan train-teacher`, the GAN objective and the packed-JPEG dataset reader.

Tiny BigGAN models (ch 8) on a 48-image 16x16 dataset made here, so the file stays well inside its
time budget on 2 shared CPU cores. The shared-data test reads only the first 300 packed images.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distilgan.cli import main as distilgan_main
from distilgan.errors import UserError
from distilgan.train.logging import read_log
from distilgan.train.losses import GANObjective, hinge_d_fake, hinge_d_real
from distilgan.train.state import load_state
from distilgan.train.training_loop import KILL_ENV

CLASSES, RES, Z_DIM = 3, 16, 24  # 16x16 G has 2 blocks: z splits into 3 chunks
TINY = ["--ch", "8", "--d-ch", "8", "--z-dim", str(Z_DIM), "--shared-dim", "8", "--batch-size", "8",
        "--d-steps", "2", "--lecam", "0.3", "--diffaugment", "color,translation,cutout", "--ema-start", "2",
        "--log-every", "1", "--ckpt-every", "1", "--ckpt-every-steps", "4", "--seed", "1", "--device", "cpu",
        "--precision", "fp32"]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def real_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 images of 3 classes: class c is a noisy image of mean colour c (something to learn)."""
    path = tmp_path_factory.mktemp("real") / "real.npz"
    gen = np.random.default_rng(3)
    labels = np.arange(48) % CLASSES
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.float64)[labels]
    images = np.clip(base[:, None, None, :] + gen.normal(0, 20, (48, RES, RES, 3)), 0, 255).astype(np.uint8)
    np.savez(path, images=images, labels=labels, class_names=np.array(["red", "green", "blue"]))
    return path


@pytest.fixture(scope="module")
def reference_run(real_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Uninterrupted: 2 epochs of 6 D steps, G every 2nd step, state every epoch and every 4 steps."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    assert distilgan_main(["train-teacher", "--data", str(real_npz), "--out", str(out), "--epochs", "2", *TINY]) == 0
    return out


def tiny_models():
    from distilgan.models import BigGANDiscriminator, BigGANGenerator

    torch.manual_seed(0)
    return (BigGANGenerator(Z_DIM, CLASSES, ch=8, resolution=RES, shared_dim=8),
            BigGANDiscriminator(CLASSES, ch=8, resolution=RES))


# -- the objective ----------------------------------------------------------------------------------
def test_gan_objective_terms_schedule_and_lecam() -> None:
    G, D = tiny_models()
    objective = GANObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, d_steps=3, policy="translation,cutout",
                             lecam=0.5, lecam_decay=0.9)
    assert [objective.generator_update_due(s) for s in range(6)] == [False, False, True, False, False, True]
    batch = {"real_images": torch.rand(6, 3, RES, RES) * 2 - 1, "real_labels": torch.arange(6) % CLASSES}
    total, terms = objective.discriminator_loss(batch)
    assert {"d/real", "d/fake", "d/lecam", "d/total", "d/real_logit", "d/fake_logit"} == set(terms)
    # first call: the LeCam averages start at the batch means
    assert torch.allclose(objective.ema_real, terms["d/real_logit"]) and torch.allclose(objective.ema_fake, terms["d/fake_logit"])
    assert torch.allclose(total, terms["d/real"] + terms["d/fake"] + 0.5 * terms["d/lecam"])
    ema_real = objective.ema_real.clone()
    _, terms2 = objective.discriminator_loss(batch)
    assert torch.allclose(objective.ema_real, 0.9 * ema_real + 0.1 * terms2["d/real_logit"])
    g_total, g_terms = objective.generator_loss(batch, step=2)
    assert set(g_terms) == {"g/gan", "g/total"} and g_total.requires_grad
    g_total.backward()
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)
    # hinge pieces
    logits = torch.tensor([-2.0, 0.0, 2.0])
    assert hinge_d_real(logits).item() == pytest.approx((3 + 1 + 0) / 3)
    assert hinge_d_fake(logits).item() == pytest.approx((0 + 1 + 3) / 3)
    # state round trip (weights_only-safe tensors)
    state = objective.state_dict()
    other = GANObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES)
    other.load_state_dict(state)
    assert torch.equal(other.ema_fake, objective.ema_fake)


def test_augmentation_is_fresh_per_call_and_seeded() -> None:
    G, D = tiny_models()
    images = torch.rand(16, 3, RES, RES) * 2 - 1
    first = GANObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, policy="color,translation,cutout", seed=4)
    a, b = first.augment(images), first.augment(images)
    assert not torch.equal(a, b)  # every call draws its own numbers
    again = GANObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, policy="color,translation,cutout", seed=4)
    assert torch.equal(again.augment(images), a)  # the stream is the objective's, from the seed
    none = GANObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, policy="")
    assert none.augment(images) is images
    with pytest.raises(UserError, match="DiffAugment"):
        GANObjective(G, D, z_dim=Z_DIM, num_classes=CLASSES, policy="rotate")


# -- distilgan train-teacher ------------------------------------------------------------------------
def test_train_teacher_logs_every_term_and_writes_run(reference_run: Path) -> None:
    from distilgan.models import BigGANGenerator, load_pretrained
    from distilgan.teachers import load_teacher

    records = read_log(reference_run)
    assert [r["step"] for r in records] == list(range(1, 13))
    for record in records:
        for term in ("d/real", "d/fake", "d/lecam", "d/total", "d/real_logit", "d/fake_logit", "lr_g", "lr_d",
                     "samples_per_s"):
            assert math.isfinite(record[term]), term
        g_step = record["step"] % 2 == 0  # --d-steps 2: G after 0-based D steps 1, 3, ...
        assert ("g/gan" in record) == g_step and ("g/total" in record) == g_step
    assert len({r["d/total"] for r in records}) > 1
    assert [p.name for p in sorted((reference_run / "grids").glob("*.png"))] == ["epoch-0001.png", "epoch-0002.png"]
    assert {p.name for p in (reference_run / "checkpoints").iterdir()} >= {
        "generator-000004", "generator-000006", "generator-000008", "generator-000012"}
    assert any((reference_run / "tb").iterdir())
    config = (reference_run / "config.yaml").read_text()
    assert "d_steps: 2" in config and "lecam: 0.3" in config and "diffaugment: color,translation,cutout" in config

    generator = load_pretrained(reference_run / "generator")
    assert isinstance(generator, BigGANGenerator) and generator.class_names == ["red", "green", "blue"]
    assert generator.metadata == {"step": 12, "epoch": 2, "ema": True, "ema_buffers": "recompute"}
    state = load_state(reference_run / "state" / "state.pt")
    assert state["ema"]["num_updates"] == 5  # G steps 2..6 (--ema-start 2 counts D steps: G steps at 1, 3 copy)
    assert state["objective"]["ema_real"] is not None
    teacher = load_teacher(f"distilgan:{reference_run / 'generator'}")
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution) == (Z_DIM, CLASSES, RES)
    z = np.random.default_rng(0).standard_normal((4, Z_DIM)).astype(np.float32)
    images = teacher.generate(z, np.array([0, 1, 2, 0]))
    assert images.shape == (4, 3, RES, RES) and np.abs(images).max() <= 1


def test_resume_after_kill_matches_uninterrupted_run(real_npz: Path, reference_run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "killed"
    args = ["train-teacher", "--data", real_npz, "--out", out, "--epochs", "2", *TINY]
    # SIGKILL after step 11: the last state is step 8 (every 4 steps, mid-epoch 2)
    proc = subprocess.run([sys.executable, "-m", "distilgan", *map(str, args)], capture_output=True, text=True,
                          env={**SUBPROCESS_ENV, KILL_ENV: "11"}, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    state = load_state(out / "state" / "state.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 2)
    assert max(r["step"] for r in read_log(out)) == 11
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    resumed, reference = read_log(out), read_log(reference_run)
    assert [r["step"] for r in resumed] == list(range(1, 13))
    for mine, theirs in zip(resumed[8:], reference[8:]):  # steps 9..12
        for term, value in theirs.items():
            if term.startswith(("d/", "g/", "lr_")):
                assert mine[term] == pytest.approx(value, rel=1e-5, abs=1e-6), (mine["step"], term)


def test_ddp_two_cpu_processes(real_npz: Path, tmp_path: Path) -> None:
    from distilgan.models import load_pretrained

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "distilgan", "train-teacher", "--data", str(real_npz), "--out", str(out), "--epochs", "1", *TINY]
    proc = subprocess.run(command, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_state(out / "state" / "state.pt")
    assert state["world_size"] == 2 and state["step"] == 6 and len(state["rng"]) == 2  # 48 / 8 = 6 global batches
    assert not torch.equal(state["rng"][0]["generators"]["objective_noise"], state["rng"][1]["generators"]["objective_noise"])
    assert [r["step"] for r in read_log(out)] == list(range(1, 7))  # only rank 0 writes the log
    assert load_pretrained(out / "generator")(torch.randn(2, Z_DIM), torch.tensor([0, 2])).shape == (2, 3, RES, RES)


def test_bad_settings_are_one_line_errors(real_npz: Path, reference_run: Path, tmp_path: Path, cli) -> None:
    code, _, err = cli("train-teacher", "--data", real_npz, "--out", tmp_path / "a", *TINY, "--diffaugment", "zoom")
    assert code == 2 and "zoom" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train-teacher", "--data", real_npz, "--out", tmp_path / "b", *TINY, "--z-dim", "25")
    assert code == 2 and "z_dim" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train-teacher", "--data", real_npz, "--out", reference_run, *TINY, "--ch", "16", "--resume")
    assert code == 2 and "'ch'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train-teacher", "--data", tmp_path / "missing.npz", "--out", tmp_path / "c")
    assert code == 2 and "not found" in err
    config = tmp_path / "c.yaml"
    config.write_text("d_steps: 0\n")
    code, _, err = cli("train-teacher", "--data", real_npz, "--out", tmp_path / "d", "--config", config)
    assert code == 2 and "d_steps" in err


BASELINE = ["--arch", "distylegan", "--ngf", "16", "--ndf", "8", "--project-dim", "8", "--batch-size", "8",
            "--d-steps", "2", "--ema-start", "2", "--log-every", "1", "--ckpt-every", "1", "--ckpt-every-steps", "4",
            "--seed", "1", "--device", "cpu", "--precision", "fp32"]


def test_distylegan_baseline_trains_from_scratch_and_resumes_exactly(real_npz: Path, tmp_path: Path, cli) -> None:
    """--arch distylegan: the student's networks under the teacher's objective (the from-scratch baseline)."""
    import yaml

    from distilgan.models import DiStyleGANGenerator, load_pretrained

    reference = tmp_path / "reference"
    args = ["train-teacher", "--data", real_npz, "--epochs", "2", *BASELINE]
    code, out, err = cli(*args, "--out", reference)
    assert code == 0, err
    generator = load_pretrained(reference / "generator")
    assert isinstance(generator, DiStyleGANGenerator) and generator.class_names == ["red", "green", "blue"]
    assert generator.z_dim == 512 and generator.ngf == 16  # the student's own latent size when --z-dim is not given
    assert generator.z_distribution.kind == "normal" and generator.teacher_fingerprint is None
    model = yaml.safe_load((reference / "config.yaml").read_text())["model"]
    assert model["arch"] == "distylegan" and model["z_dim"] == 512 and model["ndf"] == 8 and model["project_dim"] == 8
    records = read_log(reference)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(math.isfinite(r["d/total"]) for r in records) and all("g/gan" in r for r in records if r["step"] % 2 == 0)
    images = generator(torch.randn(3, 512), torch.tensor([0, 1, 2]))
    assert images.shape == (3, 3, RES, RES) and images.abs().max() <= 1

    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-m", "distilgan", *map(str, args), "--out", str(killed)], capture_output=True,
                          text=True, env={**SUBPROCESS_ENV, KILL_ENV: "7"}, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_state(killed / "state" / "state.pt")["step"] == 6  # the end of epoch 1
    code, _, err = cli(*args, "--out", killed, "--resume")
    assert code == 0, err
    assert [r["step"] for r in read_log(killed)] == list(range(1, 13))
    for mine, theirs in zip(read_log(killed)[6:], records[6:]):
        for term, value in theirs.items():
            if term.startswith(("d/", "g/")):
                assert mine[term] == pytest.approx(value, rel=1e-5, abs=1e-6), (mine["step"], term)
    # the biggan networks take other width options: one line naming the fix
    code, _, err = cli("train-teacher", "--data", real_npz, "--out", tmp_path / "bad", *TINY, "--ngf", "64")
    assert code == 2 and "--ngf" in err and "--arch distylegan" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train-teacher", "--data", real_npz, "--out", tmp_path / "bad2", "--arch", "dcgan")
    assert code == 2 and "dcgan" in err and len(err.strip().splitlines()) == 1


# -- packed JPEG datasets ---------------------------------------------------------------------------
def _pack(encoded: list[bytes], labels: np.ndarray, classes: list[str], path: Path) -> None:
    offsets = np.cumsum([0] + [len(b) for b in encoded]).astype(np.int64)
    jpeg = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    np.savez(path, jpeg=jpeg, offsets=offsets, labels=labels.astype(np.uint8), classes=np.array(classes))


def test_packed_npz_reader(tmp_path: Path) -> None:
    from PIL import Image

    from distilgan.data.datasets import open_dataset

    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    encoded = []
    for image in images:  # PNG inside: lossless, so the decoded pixels must equal the originals
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    labels = np.array([0, 1, 2, 1, 0, 2, 2])
    _pack(encoded, labels, ["a", "b", "c"], tmp_path / "packed.npz")
    ds = open_dataset(tmp_path / "packed.npz")
    assert ds.format == "npz-packed-jpeg" and ds.class_names == ["a", "b", "c"]
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels) and ds.labels.dtype == np.int64
    bad = dict(np.load(tmp_path / "packed.npz"))
    bad["offsets"] = bad["offsets"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(UserError, match="offsets"):
        open_dataset(tmp_path / "bad.npz")


def test_packed_cifar10_matches_the_jpeg_zip(shared: Path, tmp_path: Path) -> None:
    """The first 300 packed images equal the zip's train images (image k of class c = k-th of c)."""
    import zipfile

    from PIL import Image

    from distilgan.data.datasets import open_dataset

    count = 300
    with np.load(shared / "datasets" / "cifar10" / "cifar10-train-jpeg-packed.npz") as data:
        offsets, labels, classes = data["offsets"], data["labels"], [str(c) for c in data["classes"]]
        jpeg = data["jpeg"][: offsets[count]]
    _pack([jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in range(count)], labels[:count], classes,
          tmp_path / "head.npz")
    ds = open_dataset(tmp_path / "head.npz")
    assert len(ds) == count and ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    seen = np.zeros(len(classes), np.int64)
    with zipfile.ZipFile(shared / "datasets" / "cifar10" / "cifar10-jpeg.zip") as archive:
        for i in range(count):
            c = int(ds.labels[i])
            name = f"train/{classes[c]}/{seen[c]:04d}.jpg"
            seen[c] += 1
            with Image.open(io.BytesIO(archive.read(name))) as image:
                assert np.array_equal(np.asarray(image.convert("RGB")), ds.images[i]), i


def test_shipped_cpu_teacher_loads_by_name() -> None:
    from distilgan.teachers import load_teacher

    teacher = load_teacher("builtin:cifar10-teacher", truncation=1.0)
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution, teacher.channels) == (128, 10, 32, 3)
    assert teacher.class_names[0] == "airplane" and teacher.class_names[9] == "truck"
    z = np.random.default_rng(0).standard_normal((10, 128)).astype(np.float32)
    images = teacher.generate(z, np.arange(10))
    assert images.shape == (10, 3, 32, 32) and np.abs(images).max() <= 1 and images.std() > 0.1
