"""StudentGenerator API and the ``generate`` / ``info`` commands on tiny saved students."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from distilgan.errors import UserError
from distilgan.models import DiStyleGANGenerator
from distilgan.pipeline import StudentGenerator
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc
from distilgan.utils.noise import rng, sample_z

CLASSES = ["cat", "dog", "ship"]


def label_dependent_generator() -> DiStyleGANGenerator:
    """A tiny G whose images clearly depend on the label: the class columns of the first
    fully-connected layer are scaled up and the output conv is made strong enough to use
    most of [-1, 1] (a fresh reference init outputs values within about +-0.02)."""
    torch.manual_seed(0)
    g = DiStyleGANGenerator(z_dim=16, num_classes=3, project_dim=8, ngf=32, resolution=16, class_names=CLASSES)
    with torch.no_grad():
        g.fc[0].weight[:, 8:] *= 20.0
        g.to_image[0].weight *= 30.0
    return g.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "student"
    label_dependent_generator().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def student(checkpoint) -> StudentGenerator:
    return StudentGenerator.from_pretrained(checkpoint)


def test_attributes(student):
    assert (student.z_dim, student.num_classes, student.resolution, student.channels) == (16, 3, 16, 3)
    assert student.class_names == CLASSES
    assert student.device == torch.device("cpu")
    assert not student.model.training


def test_outputs_agree_and_follow_the_seed(student):
    labels = ["cat", "dog", 2, "ship", 0]
    pt = student.generate(labels, seed=3, output="pt")
    array = student.generate(labels, seed=3, output="np")
    pil = student.generate(labels, seed=3)
    assert pt.shape == (5, 3, 16, 16) and pt.dtype == torch.float32 and pt.abs().max() <= 1
    assert array.shape == (5, 16, 16, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array, nchw_to_nhwc(float_to_uint8(pt.numpy())))
    assert len(pil) == 5 and pil[0].size == (16, 16) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[4]), array[4])
    # z is exactly the documented noise: rng(seed) -> sample_z
    z = torch.from_numpy(sample_z(rng(3), 5, 16))
    with torch.no_grad():
        direct = student.model(z, torch.tensor([0, 1, 2, 2, 0]))
    assert torch.equal(direct, pt)
    # same seed -> same images, also across batch sizes; another seed -> other images
    np.testing.assert_array_equal(student.generate(labels, seed=3, output="np", batch_size=2), array)
    assert not np.array_equal(student.generate(labels, seed=4, output="np"), array)


def test_images_depend_on_label(student):
    per_class = [student.generate([name] * 4, seed=0, output="np").astype(np.int16) for name in CLASSES]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(per_class[a] - per_class[b]).mean() > 5, (CLASSES[a], CLASSES[b])


def test_truncation(student):
    _, _, z = student.sample(["cat"] * 64, seed=0, truncation=0.5)
    assert np.abs(z).max() <= 0.5
    with pytest.raises(UserError, match="truncation"):
        student.generate(["cat"], truncation=0)


def test_bad_labels_and_outputs(student):
    with pytest.raises(UserError, match="unknown class 'horse'.*cat, dog, ship"):
        student.generate(["horse"])
    with pytest.raises(UserError, match="outside 0..2"):
        student.generate([3])
    with pytest.raises(UserError, match="output"):
        student.generate([0], output="jpg")
    with pytest.raises(UserError, match="no labels"):
        student.generate([])


def test_pipeline_rejects_a_discriminator(tmp_path):
    from distilgan.models import DiStyleGANDiscriminator

    DiStyleGANDiscriminator(num_classes=3, project_dim=8, ndf=8, resolution=16).save_pretrained(tmp_path / "d")
    with pytest.raises(UserError, match="not a generator"):
        StudentGenerator.from_pretrained(tmp_path / "d")


def test_cli_npz_same_seed_same_bytes(cli, checkpoint, tmp_path):
    args = ["generate", "--checkpoint", checkpoint, "--labels", "dog", "ship", "--per-class", "3", "--seed", "7"]
    code, out, err = cli(*args, "--out", tmp_path / "a.npz")
    assert code == 0, err
    assert "wrote 6 images" in out
    assert cli(*args, "--out", tmp_path / "b.npz")[0] == 0
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as data:
        assert sorted(data.files) == ["images", "labels", "z"]
        np.testing.assert_array_equal(data["labels"], [1, 1, 1, 2, 2, 2])
        assert data["images"].shape == (6, 16, 16, 3) and data["images"].dtype == np.uint8
        assert data["z"].shape == (6, 16) and data["z"].dtype == np.float32
        np.testing.assert_array_equal(data["z"], sample_z(rng(7), 6, 16))
        student = StudentGenerator.from_pretrained(checkpoint)
        np.testing.assert_array_equal(data["images"], student.generate([1, 1, 1, 2, 2, 2], seed=7, output="np"))


def test_cli_n_cycles_labels_by_index(cli, checkpoint, tmp_path):
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--labels", "2", "0", "--n", "5", "--out", tmp_path / "n.npz")
    assert code == 0, err
    with np.load(tmp_path / "n.npz") as data:
        np.testing.assert_array_equal(data["labels"], [2, 0, 2, 0, 2])


def test_cli_folder_of_pngs(cli, checkpoint, tmp_path):
    out = tmp_path / "pngs"
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--per-class", "2", "--seed", "5", "--out", out)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["cat_5_0.png", "cat_5_1.png", "dog_5_2.png", "dog_5_3.png", "ship_5_4.png", "ship_5_5.png"]
    )
    expected = StudentGenerator.from_pretrained(checkpoint).generate([0, 0, 1, 1, 2, 2], seed=5, output="np")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "dog_5_3.png")), expected[3])
    first = (out / "ship_5_5.png").read_bytes()
    assert cli("generate", "--checkpoint", checkpoint, "--per-class", "2", "--seed", "5", "--out", out)[0] == 0
    assert (out / "ship_5_5.png").read_bytes() == first


def test_cli_png_grid_one_row_per_class(cli, checkpoint, tmp_path):
    args = ["generate", "--checkpoint", checkpoint, "--labels", "cat", "ship", "--per-class", "4"]
    assert cli(*args, "--out", tmp_path / "a.png")[0] == 0
    assert cli(*args, "--out", tmp_path / "b.png")[0] == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    grid = Image.open(tmp_path / "a.png")
    pad = 2  # make_grid's default padding
    assert grid.size == (4 * (16 + pad) + pad, 2 * (16 + pad) + pad)


def test_cli_bad_input_exits_2(cli, checkpoint, tmp_path):
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--labels", "horse", "--out", tmp_path / "x.npz")
    assert code == 2 and "unknown class 'horse'" in err and "cat, dog, ship" in err
    assert not (tmp_path / "x.npz").exists()
    code, _, err = cli("generate", "--checkpoint", tmp_path / "missing", "--out", tmp_path / "x.npz")
    assert code == 2 and "checkpoint not found" in err
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--out", tmp_path / "x.jpg")
    assert code == 2 and ".png grid" in err
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--n", "0", "--out", tmp_path / "x.npz")
    assert code == 2 and "--n must be >= 1" in err


def test_cli_info_prints_the_numbers(cli, checkpoint):
    expected = StudentGenerator.from_pretrained(checkpoint).model
    params = sum(p.numel() for p in expected.parameters())
    code, out, err = cli("info", checkpoint)
    assert code == 0, err
    assert "DiStyleGANGenerator" in out and f"{params:,}" in out
    assert "16x16" in out and "cat, dog, ship" in out and "model.safetensors" in out
    code, out, _ = cli("info", checkpoint, "--json", "--layers")
    facts = json.loads(out)
    assert facts["parameters"] == params and facts["num_classes"] == 3
    assert facts["macs_per_image"] == sum(layer["macs"] for layer in facts["layers"]) > 0
    assert facts["config"]["class_names"] == CLASSES
    code, _, err = cli("info", checkpoint.parent / "nope")
    assert code == 2 and "checkpoint not found" in err


def test_cli_info_default_generator(cli, tmp_path):
    torch.manual_seed(0)
    DiStyleGANGenerator().save_pretrained(tmp_path / "default", dtype="fp16")
    code, out, err = cli("info", tmp_path / "default")
    assert code == 0, err
    print(out)
    assert "parameters:     2,054,368" in out
    assert "MACs per image: 115,392,512 (115.4 M" in out
    assert "float16" in out
