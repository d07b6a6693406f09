"""Pruning / QAT fine-tuning through the one training loop: FinetuneObjective, NoiseBatches,
deploy.finetune.distil's run folder and exact resume, and the `--run` / `--finetune-out` options.

Tiny models (ngf = ndf = project_dim = 16, 16x16, 3 classes), a handful of steps each.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distilgan.deploy.finetune import RandomFeatures, distil, l1_to
from distilgan.train.finetune_objective import NOISE_BATCH_STREAM, FinetuneObjective, NoiseBatches
from distilgan.train.logging import read_log
from distilgan.train.state import load_state, save_state
from distilgan.train.training_loop import KILL_ENV
from distilgan.utils.noise import ZDistribution, rng, sample_z

Z_DIM, CLASSES, RES = 16, 3, 16
LOOP = {"log_every": 1, "ckpt_every_steps": 2, "precision": "fp32"}
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from distilgan.models import DiStyleGANDiscriminator, DiStyleGANGenerator

    torch.manual_seed(0)
    return (DiStyleGANGenerator(Z_DIM, CLASSES, 16, 16, RES, 3), DiStyleGANDiscriminator(CLASSES, 16, 16, RES, 3))


def perturbed(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """A copy with noisy weights and realistic BN statistics: something to fine-tune back."""
    student = copy.deepcopy(model)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(scale * torch.randn(p.shape, generator=noise))
    return student.eval()


def finetune_run(run_dir: Path, steps: int, resume: bool = False) -> dict:
    """One deterministic fine-tuning run (also started in a subprocess by the kill test)."""
    torch.set_num_threads(1)
    reference, D = tiny_models()
    reference.eval()
    return distil(perturbed(reference), reference, steps=steps, batch_size=8, lr=1e-3, seed=3, progress=False,
                  discriminator=D, run_dir=run_dir, ema=True, resume=resume, options=LOOP)


# -- the objective and the batches ---------------------------------------------------------------------
def test_objective_is_pixel_l1_plus_weighted_discriminator_features() -> None:
    reference, D = tiny_models()
    reference.eval()
    student = perturbed(reference).train()  # arrives in training mode: the objective must use eval BN
    bn_before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    d_before = {k: v.clone() for k, v in D.state_dict().items()}
    z, labels = torch.randn(6, Z_DIM), torch.arange(6) % CLASSES
    objective = FinetuneObjective(student, reference, D, feature_weight=0.5)
    assert objective.trains_discriminator is False and objective.kind == "discriminator"
    total, terms = objective.generator_loss({"z": z, "labels": labels}, step=0)

    with torch.no_grad():  # the loss written out: |G - R| + 0.5 * sum_i c_i |D_i(G) - D_i(R)|, BN in eval
        out, target = student.eval()(z, labels), reference(z, labels)
        _, f_out = D(out, labels)
        _, f_target = D(target, labels)
    pixel = (out - target).abs().mean()
    feature = sum(c * (a - b).abs().mean() for c, a, b in zip((1 / 16, 1 / 8, 1 / 4, 1.0), f_out, f_target))
    torch.testing.assert_close(terms["g/pixel"], pixel)
    torch.testing.assert_close(terms["g/feature"], feature)
    torch.testing.assert_close(total, pixel + 0.5 * feature)
    total.backward()
    assert all(p.grad is not None for p in student.parameters()) and all(p.grad is None for p in D.parameters())
    assert all(torch.equal(v, bn_before[k]) for k, v in student.state_dict().items() if "running" in k)
    assert all(torch.equal(v, d_before[k]) for k, v in D.state_dict().items())  # no power iteration either
    assert FinetuneObjective(student, reference, D).feature_weight == 1.0  # TinyGAN: unweighted by default


def test_objective_falls_back_to_random_features_then_pixel_l1() -> None:
    reference, _ = tiny_models()
    reference.eval()
    student = perturbed(reference)
    z, labels = torch.randn(4, Z_DIM), torch.tensor([0, 1, 2, 0])
    features = RandomFeatures(3)
    total, terms = FinetuneObjective(student, reference, None, features, 0.3).generator_loss({"z": z, "labels": labels}, 0)
    with torch.no_grad():
        out, target = student(z, labels), reference(z, labels)
    random_l1 = sum(F.l1_loss(a, b) for a, b in zip(features(out), features(target)))
    torch.testing.assert_close(total, F.l1_loss(out, target) + 0.3 * random_l1)
    objective = FinetuneObjective(student, reference)
    total, terms = objective.generator_loss({"z": z, "labels": labels}, 0)
    assert objective.kind == "none" and set(terms) == {"g/pixel", "g/total"}
    torch.testing.assert_close(total, F.l1_loss(out, target))
    assert objective.describe().startswith("pixel L1 only")


def test_noise_batches_are_a_function_of_seed_and_step() -> None:
    source = NoiseBatches(Z_DIM, [0, 2, 5], batch_size=6, seed=4, steps_per_epoch=3)
    batches = list(source.batches(epoch=1, skip=1))
    assert len(batches) == 2  # batches 1 and 2 of epoch 1 = loop steps 4 and 5
    np.testing.assert_array_equal(batches[0]["z"].numpy(), sample_z(rng(4, NOISE_BATCH_STREAM, 4), 6, Z_DIM))
    assert torch.equal(batches[1]["z"], source.batch(5)["z"]) and not torch.equal(batches[0]["z"], batches[1]["z"])
    assert sorted(batches[0]["labels"].tolist()) == [0, 0, 2, 2, 5, 5]  # class-balanced, the given classes only
    generator, _ = tiny_models()
    generator.z_distribution = ZDistribution("truncated", 0.5)  # a model that records its z distribution
    z = NoiseBatches.for_model(generator, 64, seed=0).batch(0)["z"]
    assert z.abs().max() <= 0.5 and z.shape == (64, Z_DIM)


# -- the loop's run folder and exact resume --------------------------------------------------------------
def test_finetune_through_trainer_writes_log_state_and_reduces_l1(tmp_path: Path) -> None:
    reference, D = tiny_models()
    reference.eval()
    student = perturbed(reference)
    before = l1_to(student, reference, n=64)
    report = distil(student, reference, steps=6, batch_size=8, lr=1e-3, progress=False, discriminator=D,
                    run_dir=tmp_path / "ft", options=LOOP)
    assert l1_to(student, reference, n=64) < before and report["features"] == "discriminator"
    records = read_log(tmp_path / "ft")
    assert [r["step"] for r in records] == list(range(1, 7))
    assert {"g/pixel", "g/feature", "g/total"} <= set(records[0]) and not any(k.startswith("d/") for k in records[0])
    state = load_state(tmp_path / "ft" / "state" / "state.pt")
    assert state["step"] == 6 and state["opt_d"] is None
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in state["discriminator"].items())  # D stayed frozen
    assert state["config"]["extra"]["finetune"]["features"] == "discriminator"
    assert (tmp_path / "ft" / "generator" / "model.safetensors").is_file() and (tmp_path / "ft" / "config.yaml").is_file()
    with pytest.raises(Exception, match="already holds a fine-tuning run"):  # never silently overwritten
        distil(student, reference, steps=6, batch_size=8, progress=False, run_dir=tmp_path / "ft")


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    finetune_run(tmp_path / "reference", steps=6)
    killed = tmp_path / "killed"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_finetune_loop as t; "
            f"from pathlib import Path; t.finetune_run(Path({str(killed)!r}), steps=6)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**SUBPROCESS_ENV, KILL_ENV: "3"}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_state(killed / "state" / "state.pt")["step"] == 2  # step 3 was done, then lost
    report = finetune_run(killed, steps=6, resume=True)
    assert report["resumed_from_step"] == 2
    resumed, reference = read_log(killed), read_log(tmp_path / "reference")
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for mine, theirs in zip(resumed[2:], reference[2:]):
        for term in ("g/pixel", "g/feature", "g/total", "lr_g"):
            assert mine[term] == pytest.approx(theirs[term], rel=1e-5, abs=1e-7), (mine["step"], term)
    a, b = load_state(killed / "state" / "state.pt"), load_state(tmp_path / "reference" / "state" / "state.pt")
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == 6
    for mine, theirs in ((a["generator"], b["generator"]), (a["ema"]["model"], b["ema"]["model"])):
        for key, value in mine.items():
            torch.testing.assert_close(value, theirs[key], rtol=1e-5, atol=1e-7)


def test_resume_refuses_another_reference(tmp_path: Path) -> None:
    from distilgan.errors import UserError

    finetune_run(tmp_path / "ft", steps=2)
    reference, D = tiny_models()
    with pytest.raises(UserError, match="started with reference"):  # --resume with a different --checkpoint
        distil(perturbed(reference), perturbed(reference, 0.1), steps=4, batch_size=8, lr=1e-3, seed=3,
               progress=False, discriminator=D, run_dir=tmp_path / "ft", ema=True, resume=True, options=LOOP)
    with pytest.raises(UserError, match="started with features"):  # --resume without the --run it had
        distil(perturbed(reference), reference.eval(), steps=4, batch_size=8, lr=1e-3, seed=3, progress=False,
               run_dir=tmp_path / "ft", ema=True, resume=True, options=LOOP)


# -- the commands' options --------------------------------------------------------------------------------
@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    generator, _ = tiny_models()
    return generator.eval().save_pretrained(tmp_path / "generator")


def fake_run(folder: Path, discriminator: torch.nn.Module | None, ndf: int = 16) -> Path:
    """What `distilgan distill` leaves for --run: config.yaml and state/state.pt with D."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"ndf: {ndf}\nproject_dim: 16\ndata: store\n")
    save_state({"discriminator": discriminator.state_dict() if discriminator is not None else None},
               folder / "state" / "state.pt")
    return folder


@pytest.mark.parametrize("command", ["prune", "qat"])
def test_bad_run_folder_is_one_line(cli, checkpoint: Path, tmp_path: Path, command: str) -> None:
    from distilgan.models import DiStyleGANDiscriminator

    base = [command, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--steps", "2"]
    wider = DiStyleGANDiscriminator(CLASSES, 16, 32, RES, 3)
    cases = [(tmp_path / "nothing", "no distill run there"),
             (fake_run(tmp_path / "no-d", None), "holds no trained discriminator"),
             (fake_run(tmp_path / "wider", wider, ndf=16), "does not fit this generator")]
    for folder, message in cases:
        code, _, err = cli(*base, "--run", folder)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(*base, "--resume")
    assert code == 2 and "--finetune-out" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_options_print_the_loss_and_load_the_run_discriminator(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from distilgan.deploy.finetune_cli import add_finetune_options, finetune_arguments
    from distilgan.models import load_pretrained

    parser = argparse.ArgumentParser()
    add_finetune_options(parser, steps=10, lr=1e-4, steps_meaning="steps")
    required = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    model = load_pretrained(checkpoint)
    kwargs = finetune_arguments(parser.parse_args(required), model, "qat")
    assert kwargs["discriminator"] is None and "pixel L1 only (no --run" in capsys.readouterr().out
    finetune_arguments(parser.parse_args([*required, "--feature-weight", "0.2"]), model, "qat")
    assert "0.2 x random-conv feature L1" in capsys.readouterr().out
    _, D = tiny_models()
    run = fake_run(tmp_path / "run", D)
    args = parser.parse_args([*required, "--run", str(run), "--finetune-out", str(tmp_path / "ft"), "--precision",
                              "fp32", "--metrics", "kid"])
    kwargs = finetune_arguments(args, model, "prune")
    assert "1 x discriminator feature L1" in capsys.readouterr().out
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in kwargs["discriminator"].state_dict().items())
    assert kwargs["finetune"]["options"] == {"precision": "fp32", "metrics": "kid", "metric_ref": "store"}


def test_qat_cli_with_run_finetune_out_and_resume(cli, checkpoint: Path, tmp_path: Path) -> None:
    from distilgan.models import load_pretrained

    _, D = tiny_models()
    run, ft = fake_run(tmp_path / "run", D), tmp_path / "ft"
    args = ["qat", "--checkpoint", checkpoint, "--batch-size", "8", "--calibration-size", "16", "--format", "onnx",
            "--int8", "qat", "--run", run, "--finetune-out", ft, "--log-every", "1", "--precision", "fp32"]
    code, out, err = cli(*args, "--out", tmp_path / "q1", "--steps", "3")
    assert code == 0, err
    assert "qat: fine-tuning loss: pixel L1 + 1 x discriminator feature L1" in out
    assert [r["step"] for r in read_log(ft)] == [1, 2, 3] and "g/feature" in read_log(ft)[0]
    # the loop's checkpoints hold the plain model (fake quantisers stripped), loadable as any checkpoint
    assert load_pretrained(ft / "generator").config["architecture"] == "DiStyleGANGenerator"
    code, out, err = cli(*args, "--out", tmp_path / "q2", "--steps", "5", "--resume")  # extend the run
    assert code == 0, err
    assert [r["step"] for r in read_log(ft)] == [1, 2, 3, 4, 5] and load_state(ft / "state" / "state.pt")["step"] == 5
    report = (tmp_path / "q2" / "qat.json").read_text()
    assert '"resumed_from_step": 3' in report and '"features": "discriminator"' in report
