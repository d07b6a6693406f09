"""Per-image seeds: the ``0-3,7`` syntax, ``generate --seeds`` (any image regenerates alone,
byte-identically) and the HTTP API's ``seeds`` field."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilgan.errors import UserError
from distilgan.models import DiStyleGANGenerator
from distilgan.pipeline import StudentGenerator
from distilgan.utils.images import make_grid
from distilgan.utils.noise import ZDistribution, rng
from distilgan.utils.seeds import parse_seeds, z_for_seeds

CLASSES = ["cat", "dog", "ship"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 16x16, 3-class generator whose images depend on z and label (as in test_generate.py)."""
    torch.manual_seed(0)
    g = DiStyleGANGenerator(z_dim=16, num_classes=3, project_dim=8, ngf=32, resolution=16, class_names=CLASSES)
    with torch.no_grad():
        g.fc[0].weight[:, 8:] *= 20.0
        g.to_image[0].weight *= 30.0
    folder = tmp_path_factory.mktemp("seeds") / "student"
    g.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def student(checkpoint) -> StudentGenerator:
    return StudentGenerator.from_pretrained(checkpoint)


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- the list syntax -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, seeds", [
    ("0-3,7", [0, 1, 2, 3, 7]),
    ("5", [5]),
    (" 2 - 4 , 9 ", [2, 3, 4, 9]),
    ("3,3", [3, 3]),  # repeats are kept: the user asked for them
    ("10-10", [10]),
])
def test_seed_lists_parse(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [
    ("3-1", "runs backwards"),
    ("a", "is not a seed"),
    ("-1", "is not a seed"),
    ("", "is not a seed"),
    ("1,,2", "is not a seed"),
    ("0-200000", "more than"),
])
def test_bad_seed_lists_are_one_line_errors(text, message):
    with pytest.raises(UserError, match=message) as caught:
        parse_seeds(text)
    assert "\n" not in str(caught.value)


def test_z_for_seeds_draws_each_row_from_its_own_seed():
    dist = ZDistribution("truncated", 1.0)
    z = z_for_seeds(dist, [4, 9, 4], 6)
    assert z.shape == (3, 6) and z.dtype == np.float32
    np.testing.assert_array_equal(z[0], dist.sample(rng(4), 1, 6)[0])
    np.testing.assert_array_equal(z[0], z[2])  # same seed, same z, wherever it stands
    assert not np.array_equal(z[0], z[1])


# --- the Python API ------------------------------------------------------------------------------


def test_python_api_seeds_make_each_image_alone(student):
    many = student.generate(["cat", "cat", "dog"], seeds=[5, 6, 7], output="np")
    for i, (label, seed) in enumerate([("cat", 5), ("cat", 6), ("dog", 7)]):
        np.testing.assert_array_equal(student.generate([label], seeds=[seed], output="np")[0], many[i])
    assert not np.array_equal(many[0], many[1])
    with pytest.raises(UserError, match="one seed per label"):
        student.generate(["cat", "dog"], seeds=[1])


# --- generate --seeds ----------------------------------------------------------------------------


def test_generate_seeds_any_image_regenerates_byte_identically(cli, checkpoint, tmp_path):
    code, out, err = cli("generate", "--checkpoint", checkpoint, "--labels", "cat", "dog", "--seeds", "0-9,42",
                         "--out", tmp_path / "all")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert len(files) == 22 and "seeds 0-9,42, one per image" in out
    # one row per label, one column per seed: dog is the second label, so its images are 11..21
    assert (tmp_path / "all" / "dog_42_21.png").is_file() and (tmp_path / "all" / "cat_3_3.png").is_file()
    for label, seed, index in (("dog", 7, 18), ("cat", 42, 10), ("cat", 0, 0)):
        code, _, err = cli("generate", "--checkpoint", checkpoint, "--labels", label, "--seeds", str(seed),
                           "--out", tmp_path / f"one-{label}-{seed}")
        assert code == 0, err
        alone = (tmp_path / f"one-{label}-{seed}" / f"{label}_{seed}_0.png").read_bytes()
        assert alone == (tmp_path / "all" / f"{label}_{seed}_{index}.png").read_bytes()
    assert (tmp_path / "all" / "cat_1_1.png").read_bytes() != (tmp_path / "all" / "cat_2_2.png").read_bytes()


def test_generate_seeds_grid_and_npz(cli, checkpoint, tmp_path, student):
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--labels", "cat", "ship", "--seeds", "3-5",
                       "--out", tmp_path / "grid.png")
    assert code == 0, err
    expected = student.generate([0, 0, 0, 2, 2, 2], seeds=[3, 4, 5, 3, 4, 5], output="np")
    np.testing.assert_array_equal(decode_png((tmp_path / "grid.png").read_bytes()), make_grid(expected, nrow=3))

    code, _, err = cli("generate", "--checkpoint", checkpoint, "--labels", "dog", "--seeds", "8,1",
                       "--out", tmp_path / "s.npz")
    assert code == 0, err
    with np.load(tmp_path / "s.npz") as data:
        assert data["seeds"].tolist() == [8, 1] and data["labels"].tolist() == [1, 1]
        np.testing.assert_array_equal(data["z"], z_for_seeds(student.z_distribution, [8, 1], 16))
    with zipfile.ZipFile(tmp_path / "s.npz") as archive:
        assert "seeds.npy" in archive.namelist()


def test_whole_list_seed_is_unchanged(cli, checkpoint, tmp_path, student):
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--labels", "cat", "--per-class", "3", "--seed", "4",
                       "--out", tmp_path / "w.npz")
    assert code == 0, err
    with np.load(tmp_path / "w.npz") as data:
        assert "seeds" not in data.files
        np.testing.assert_array_equal(data["images"], student.generate([0, 0, 0], seed=4, output="np"))


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0-3", "--seed", "1"], "--seed is one seed for the whole list"),
    (["--seeds", "0-3", "--n", "4"], "leave out --per-class and --n"),
    (["--seeds", "0-3", "--per-class", "2"], "leave out --per-class and --n"),
    (["--seeds", "3-1"], "--seeds must be seeds and ranges"),
    (["--seeds", "x"], "--seeds must be seeds and ranges"),
])
def test_generate_seeds_misuse_is_one_line(cli, checkpoint, tmp_path, extra, message):
    code, out, err = cli("generate", "--checkpoint", checkpoint, "--out", tmp_path / "x.png", *extra)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("distilgan: error: ")
    assert not (tmp_path / "x.png").exists()


# --- the HTTP API --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(checkpoint):
    pytest.importorskip("fastapi", reason="distilgan serve needs fastapi")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from distilgan.serve import create_app, load_backend

    with TestClient(create_app(load_backend("torch", checkpoint), max_count=16)) as test_client:
        yield test_client


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
@pytest.mark.parametrize("seeds", [[2, 9, 4], "2,9,4"])
def test_api_seeds_match_the_python_api(client, student, seeds):
    answer = client.post("/generate", json={"labels": ["dog", "ship"], "seeds": seeds, "format": "images"})
    assert answer.status_code == 200, answer.text
    facts = answer.json()
    assert facts["seed"] is None and facts["seeds"] == [2, 9, 4, 2, 9, 4] and facts["nrow"] == 3
    assert [(i["label"], i["seed"]) for i in facts["images"]] == [(1, 2), (1, 9), (1, 4), (2, 2), (2, 9), (2, 4)]
    for image in facts["images"]:  # each one is the image of its own (label, seed), made alone
        alone = student.generate([image["label"]], seeds=[image["seed"]], output="np")[0]
        np.testing.assert_array_equal(decode_png(base64.b64decode(image["png_base64"])), alone)

    grid = client.post("/generate", json={"labels": ["dog"], "seeds": seeds})
    assert grid.status_code == 200 and grid.headers["x-seeds"] == "2,9,4" and "x-seed" not in grid.headers
    assert grid.headers["x-grid-nrow"] == "3"


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_api_requests_without_seeds_are_unchanged(client, student):
    answer = client.post("/generate", json={"labels": ["cat"], "count": 2, "seed": 5, "format": "images"})
    facts = answer.json()
    assert answer.status_code == 200 and facts["seed"] == 5 and "seeds" not in facts
    assert all("seed" not in image for image in facts["images"])
    got = np.stack([decode_png(base64.b64decode(i["png_base64"])) for i in facts["images"]])
    np.testing.assert_array_equal(got, student.generate([0, 0], seed=5, output="np"))


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
@pytest.mark.parametrize("body, message", [
    ({"seeds": [1, 2], "seed": 3}, "leave out seed"),
    ({"seeds": [1], "count": 2}, "leave out count"),
    ({"seeds": "3-1"}, "runs backwards"),
    ({"seeds": []}, "seeds is empty"),
    ({"seeds": [-1]}, "seeds[0]: Input should be greater than or equal to 0"),
    ({"seeds": 5}, "seeds: must be a list of seeds"),
    ({"labels": ["cat", "dog"], "seeds": "0-9"}, "at most 16"),
])
def test_api_bad_seeds_get_one_line(client, body, message):
    answer = client.post("/generate", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert message in error and "\n" not in error
