"""The z distribution and the class space travel with the model: store manifest -> student config.json
-> every consumer (generate, StudentGenerator, eval, serve, export calibration, fine-tuning, calibration
sources), overridable; old stores and checkpoints still load; one label resolver."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distilgan.store import DistillationStore, verify_store
from distilgan.errors import UserError
from distilgan.models import BigGANGenerator, DiStyleGANGenerator, load_pretrained
from distilgan.models.pretrained import PRETRAINED_ROOT
from distilgan.pipeline import StudentGenerator
from distilgan.utils.labels import resolve_labels
from distilgan.utils.latent import choose_distribution
from distilgan.utils.noise import ZDistribution, rng, sample_z

NAMES = ["ant", "bee", "cow"]
TRUNCATED = {"kind": "truncated", "threshold": 0.5}
TRAINED = [2, 0]  # a class subset, in label order


def tiny(**space) -> DiStyleGANGenerator:
    torch.manual_seed(0)
    return DiStyleGANGenerator(z_dim=8, num_classes=3, project_dim=8, ngf=16, resolution=8, class_names=NAMES,
                               **space).eval()


@pytest.fixture(scope="module")
def subset_ckpt(tmp_path_factory) -> Path:
    """A student trained (as its config says) on truncated z, t = 0.5, and classes cow, ant."""
    folder = tmp_path_factory.mktemp("zd") / "student"
    tiny(z_distribution=TRUNCATED, classes=TRAINED, teacher_fingerprint="f" * 64).save_pretrained(folder)
    return folder


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- the distributions --------------------------------------------------------------------------------
def test_kinds_statistics():
    n, d = 4000, 8
    normal = ZDistribution().sample(rng(1), n, d)
    assert abs(normal.std() - 1) < 0.02 and np.abs(normal).max() > 3
    truncated = ZDistribution("truncated", 0.5).sample(rng(1), n, d)
    assert np.abs(truncated).max() <= 0.5 and truncated.dtype == np.float32
    np.testing.assert_array_equal(truncated, sample_z(rng(1), n, d, 0.5))  # the numbers stores always had
    scaled = ZDistribution("scaled-truncnorm", 0.5).sample(rng(1), n, d)
    assert np.abs(scaled).max() <= 1.0 and scaled.dtype == np.float32  # t * truncnorm(-2, 2): |z| <= 2t
    assert np.abs(scaled).max() > 0.9  # scaled, not cut at t
    # std of truncnorm(-2, 2) is 0.8796; scaled by t
    assert abs(scaled.std() / 0.5 - 0.8796) < 0.02
    torch_z = ZDistribution("scaled-truncnorm", 0.5).sample_torch(torch.Generator().manual_seed(0), n, d)
    assert float(torch_z.abs().max()) <= 1.0 and abs(float(torch_z.std()) / 0.5 - 0.8796) < 0.02
    assert ZDistribution.from_dict({"kind": "truncated_normal", "threshold": 0.5}) == ZDistribution("truncated", 0.5)
    assert ZDistribution.from_dict(None) == ZDistribution()


def test_overrides():
    base = ZDistribution("scaled-truncnorm", 1.0)
    assert choose_distribution(base) is base
    assert choose_distribution(base, 0.5) == ZDistribution("scaled-truncnorm", 0.5)  # keeps the model's kind
    assert choose_distribution(ZDistribution(), 0.5) == ZDistribution("truncated", 0.5)  # the old --truncation
    assert choose_distribution(base, kind="truncated") == ZDistribution("truncated", 1.0)
    assert choose_distribution(base, kind="normal") == ZDistribution()
    for truncation, kind, message in ((0, None, "> 0"), (None, "cauchy", "truncated, scaled-truncnorm"),
                                      (0.5, "normal", "no truncation"), (None, "truncated", "needs a threshold")):
        with pytest.raises(UserError, match=message):
            choose_distribution(ZDistribution(), truncation, kind)


# -- the store ----------------------------------------------------------------------------------------
def sample_args(out: Path, *extra: str) -> list[str]:
    return ["sample", "--teacher", "builtin:toy", "--out", str(out), "--per-class", "2", "--classes", "cat", "dog",
            "--shard-size", "3", "--quiet", *extra]


def test_sample_truncation_kind_writes_the_manifest(tmp_path, cli):
    code, out, err = cli(*sample_args(tmp_path / "s", "--truncation", "0.8", "--truncation-kind", "scaled-truncnorm"))
    assert code == 0, err
    assert "z scaled-truncnorm (t=0.8)" in out
    store = DistillationStore.open(tmp_path / "s")
    assert store.manifest["z_distribution"] == {"kind": "scaled-truncnorm", "threshold": 0.8}
    assert store.z_distribution == ZDistribution("scaled-truncnorm", 0.8) and store.classes == [3, 5]
    z, labels, _ = store.read_shard(0)
    np.testing.assert_array_equal(z, ZDistribution("scaled-truncnorm", 0.8).sample(rng(0, 0), 3, store.z_dim))
    assert np.abs(z).max() <= 1.6 and labels.tolist() == [3, 5, 3]

    code, _, err = cli(*sample_args(tmp_path / "bad", "--truncation", "0.8", "--truncation-kind", "cauchy"))
    line = one_line(err)
    assert code == 2 and "--truncation-kind 'cauchy'" in line and "truncated, scaled-truncnorm" in line
    code, _, err = cli(*sample_args(tmp_path / "bad", "--truncation-kind", "scaled-truncnorm"))
    assert code == 2 and "needs --truncation" in one_line(err)


def test_old_store_manifest_opens_verifies_and_resumes(tmp_path, cli, capsys):
    out = tmp_path / "old"
    assert cli(*sample_args(out, "--truncation", "0.5"))[0] == 0
    shards = {p.name: p.read_bytes() for p in out.glob("shard-*.npz")}
    z0 = DistillationStore.open(out).read_shard(0)[0]
    np.testing.assert_array_equal(z0, sample_z(rng(0, 0), 3, z0.shape[1], 0.5))  # byte-exact as before
    # as stores before the named kinds wrote it
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["z_distribution"] == {"kind": "truncated", "threshold": 0.5}
    manifest["z_distribution"] = {"kind": "truncated_normal", "threshold": 0.5}
    manifest["z_stream"] = "shard k: sample_z(rng(seed, k), count, z_dim, z_distribution threshold)"
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()

    assert verify_store(out) == []
    store = DistillationStore.open(out)
    assert store.z_distribution == ZDistribution("truncated", 0.5)
    assert "predates named z kinds" in one_line(capsys.readouterr().err)
    DistillationStore.open(out)
    assert capsys.readouterr().err == ""  # once per set

    # the same command resumes it (nothing to redo), and the shards keep their bytes
    code, text, err = cli(*sample_args(out, "--truncation", "0.5"))
    assert code == 0, err
    assert "kept from an earlier run" in text
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.npz")} == shards
    # another kind is another set
    code, _, err = cli(*sample_args(out, "--truncation", "0.5", "--truncation-kind", "scaled-truncnorm"))
    assert code == 2 and "different --truncation-kind" in one_line(err)


# -- checkpoints --------------------------------------------------------------------------------------
def test_checkpoints_carry_the_space(tmp_path, subset_ckpt):
    config = json.loads((subset_ckpt / "config.json").read_text())
    assert config["z_distribution"] == TRUNCATED and config["classes"] == TRAINED
    assert config["teacher_fingerprint"] == "f" * 64
    model = load_pretrained(subset_ckpt)
    assert model.z_distribution == ZDistribution("truncated", 0.5) and model.classes == TRAINED
    assert model.teacher_fingerprint == "f" * 64

    space = {"z_distribution": {"kind": "scaled-truncnorm", "threshold": 1.0}, "classes": [1], "teacher_fingerprint": "t"}
    biggan = BigGANGenerator(z_dim=8, num_classes=2, ch=8, resolution=8, hierarchical=False, **space)
    pruned = DiStyleGANGenerator(z_dim=8, num_classes=2, project_dim=8, ngf=16, resolution=8, widths=[8, 4], **space)
    for name, model in (("biggan", biggan), ("pruned", pruned)):
        model.save_pretrained(tmp_path / name)
        loaded = load_pretrained(tmp_path / name)
        assert loaded.config == model.config and loaded.classes == [1]
        assert loaded.z_distribution == ZDistribution("scaled-truncnorm", 1.0)
    assert tiny().config["z_distribution"] == {"kind": "normal"} and tiny().classes is None
    later = tiny()  # set after construction: validated, and recorded in config.json
    later.z_distribution, later.classes = ZDistribution("truncated", 0.7), [1, 2]
    later.save_pretrained(tmp_path / "later")
    saved = json.loads((tmp_path / "later" / "config.json").read_text())
    assert saved["z_distribution"] == {"kind": "truncated", "threshold": 0.7} and saved["classes"] == [1, 2]
    with pytest.raises(UserError, match="0..2"):
        later.classes = [7]
    for bad, message in (({"classes": [3]}, "0..2"), ({"classes": [1, 1]}, "distinct"),
                         ({"z_distribution": {"kind": "cauchy"}}, "cauchy")):
        with pytest.raises(UserError, match=message):
            tiny(**bad)


def test_old_checkpoint_loads_with_one_notice(tmp_path, capsys):
    old = tmp_path / "old"
    tiny().save_pretrained(old)
    config = json.loads((old / "config.json").read_text())
    for key in ("z_distribution", "classes", "teacher_fingerprint"):
        del config[key]  # as config.json was written before these settings
    (old / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    model = load_pretrained(old)
    line = one_line(capsys.readouterr().err)
    assert f"{old} predates z_distribution: assuming z ~ N(0, I) and all 3 classes" in line
    assert model.z_distribution == ZDistribution() and model.classes is None
    assert StudentGenerator(model).classes == [0, 1, 2]
    load_pretrained(old)
    assert capsys.readouterr().err == ""  # once per checkpoint
    # shipped checkpoints stay quiet (the teacher's config.json is part of its fingerprint, so it is kept)
    shipped = json.loads((PRETRAINED_ROOT / "cifar10-teacher" / "config.json").read_text())
    BigGANGenerator._on_load(PRETRAINED_ROOT / "cifar10-teacher", shipped)
    assert capsys.readouterr().err == ""
    student = json.loads((PRETRAINED_ROOT / "cifar10-student" / "config.json").read_text())
    # all ten classes: null in configs written before the trainer recorded the store's classes, the list since
    assert student["z_distribution"] == {"kind": "normal"} and student["classes"] in (None, list(range(10)))
    assert len(student["teacher_fingerprint"]) == 64  # the shipped student records its teacher


# -- consumers default to the model's space -----------------------------------------------------------
def test_student_generator_defaults_and_overrides(subset_ckpt):
    g = StudentGenerator.from_pretrained(subset_ckpt)
    assert g.z_distribution == ZDistribution("truncated", 0.5) and g.classes == TRAINED
    _, labels, z = g.sample(["cow", "ant"] * 50, seed=3)
    assert np.abs(z).max() <= 0.5 and labels.tolist()[:2] == [2, 0]
    np.testing.assert_array_equal(z, ZDistribution("truncated", 0.5).sample(rng(3), 100, 8))
    _, _, wide = g.sample(["cow"] * 100, seed=3, truncation=2.0)
    assert 0.5 < np.abs(wide).max() <= 2.0
    _, _, normal = g.sample(["cow"] * 4, seed=3, truncation_kind="normal")
    np.testing.assert_array_equal(normal, sample_z(rng(3), 4, 8))
    with pytest.raises(UserError, match="not one the model was trained on .*cow, ant"):
        g.generate(["bee"])


def test_generate_cli_uses_the_model_space(subset_ckpt, tmp_path, cli):
    code, out, err = cli("generate", "--checkpoint", subset_ckpt, "--per-class", "20", "--out", tmp_path / "a.npz")
    assert code == 0, err
    assert "z truncated (t=0.5)" in out
    with np.load(tmp_path / "a.npz") as data:
        assert data["labels"].tolist() == [2] * 20 + [0] * 20  # the model's classes, in its order (grid rows)
        assert np.abs(data["z"]).max() <= 0.5
    code, out, err = cli("generate", "--checkpoint", subset_ckpt, "--labels", "COW", "--n", "40", "--truncation", "1.5",
                         "--truncation-kind", "scaled-truncnorm", "--out", tmp_path / "b.npz")
    assert code == 0, err
    with np.load(tmp_path / "b.npz") as data:
        np.testing.assert_array_equal(data["z"], ZDistribution("scaled-truncnorm", 1.5).sample(rng(0), 40, 8))
    code, _, err = cli("generate", "--checkpoint", subset_ckpt, "--truncation-kind", "cauchy", "--out", tmp_path / "c.npz")
    assert code == 2 and "normal, truncated, scaled-truncnorm" in one_line(err)
    code, _, err = cli("generate", "--checkpoint", subset_ckpt, "--labels", "bee", "--out", tmp_path / "c.npz")
    assert code == 2 and "trained on" in one_line(err)


def test_eval_samples_the_model_space(subset_ckpt, monkeypatch):
    from distilgan.commands import eval as eval_command

    seen = {}

    def fake_generate(forward, z, labels, batch_size, desc):
        seen.update(z=z, labels=labels)
        return np.zeros((len(z), 8, 8, 3), np.uint8)

    monkeypatch.setattr(eval_command, "_generate", fake_generate)
    args = argparse.Namespace(images=None, checkpoint=str(subset_ckpt), teacher=None, n=10, seed=0, truncation=None,
                              device="cpu", batch_size=4, fidelity_teacher=None)
    _, labels, source, _ = eval_command._samples(args)
    assert labels.tolist() == [2, 0] * 5 and np.abs(seen["z"]).max() <= 0.5
    assert source["z_distribution"] == TRUNCATED and source["classes"] == TRAINED  # in the JSON protocol
    args.truncation = 1.0
    _, _, source, _ = eval_command._samples(args)
    assert source["z_distribution"] == {"kind": "truncated", "threshold": 1.0}


def test_serve_defaults_to_the_model_space(subset_ckpt):
    from distilgan.serve.app import ApiError, GenerationService
    from distilgan.serve.backend import TorchBackend
    from distilgan.serve.schemas import GenerateRequest

    backend = TorchBackend(subset_ckpt)
    seen = []
    real = backend.generate
    backend.generate = lambda z, labels: (seen.append(z), real(z, labels))[1]
    service = GenerationService(backend)
    result = service.generate(GenerateRequest(count=8, seed=1))
    assert result.labels.tolist() == [2] * 8 + [0] * 8 and np.abs(seen[-1]).max() <= 0.5
    assert result.z_distribution == ZDistribution("truncated", 0.5)
    result = service.generate(GenerateRequest(labels=["ant"], total=30, seed=1, truncation=1.5,
                                              truncation_kind="scaled-truncnorm"))
    np.testing.assert_array_equal(seen[-1], ZDistribution("scaled-truncnorm", 1.5).sample(rng(1), 30, 8))
    with pytest.raises(ApiError, match=r"labels\[0\]: class 'bee' .*trained on"):
        service.plan(GenerateRequest(labels=["bee"]))


def test_export_calibration_and_finetune_inputs_follow_the_model(subset_ckpt):
    from distilgan.deploy.export import generator_facts
    from distilgan.deploy.finetune import FINETUNE_STREAM, input_batch
    from distilgan.deploy.quantize import calibration_batches

    model = load_pretrained(subset_ckpt)
    facts = generator_facts(model)
    assert facts["z_distribution"] == TRUNCATED and facts["classes"] == TRAINED
    feeds = calibration_batches(8, 3, 64, batch=16, z_distribution=model.z_distribution, classes=model.classes)
    assert max(np.abs(f["z"]).max() for f in feeds) <= 0.5
    assert set(np.concatenate([f["labels"] for f in feeds]).tolist()) == set(TRAINED)
    z, labels = input_batch(model, 64, step=2, seed=0)
    assert float(z.abs().max()) <= 0.5 and set(labels.tolist()) == set(TRAINED)
    plain = tiny()  # a normal z and all classes: the numbers fine-tuning has always drawn
    z, labels = input_batch(plain, 6, step=2, seed=0)
    np.testing.assert_array_equal(z.numpy(), sample_z(rng(0, FINETUNE_STREAM, 2), 6, 8))
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_student_calibration_source_uses_the_model_space(subset_ckpt):
    from distilgan.calibration.sources import calibration_set

    class Classifier:
        num_classes, resolution = 3, 8

        def preprocess(self, images):
            return images.astype(np.float32).transpose(0, 3, 1, 2) / 255

    found = calibration_set("student", Classifier(), 6, seed=0, student=str(subset_ckpt))
    assert found.images.shape == (6, 8, 8, 3)
    assert found.description["z_distribution"] == TRUNCATED and found.description["classes"] == TRAINED


# -- the one label resolver ---------------------------------------------------------------------------
def test_label_resolver_strict_and_lenient():
    names = ["cat", "dog", "emu"]
    assert resolve_labels(["dog", 2, "0"], names).tolist() == [1, 2, 0]
    assert resolve_labels([" DOG ", "Emu"], names, strict=False).tolist() == [1, 2]
    for label in (" dog", "DOG", True, 1.5, "-1"):
        with pytest.raises(UserError, match="unknown class") as caught:
            resolve_labels([label], names)
        assert "cat, dog, emu" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UserError, match="outside 0..2"):
        resolve_labels([3], names, strict=False)
    with pytest.raises(UserError, match=r"labels\[1\]: class 'cat' \(0\) is not one .*emu, dog"):
        resolve_labels(["dog", "cat"], names, allowed=[2, 1], where="labels")
    with pytest.raises(UserError, match="given twice"):
        resolve_labels(["dog", "1"], names, unique=True)
    assert resolve_labels(["4"], None, num_classes=5).tolist() == [4]  # indices only, no names
    with pytest.raises(UserError, match="no labels"):
        resolve_labels([], names)
