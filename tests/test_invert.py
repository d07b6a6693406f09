"""The slow edit path: a latent encoder trained by the loop, inversion by optimisation, `distilgan invert`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distilgan.edit.invert import InversionSettings, PerceptualDistance, invert
from distilgan.models import load_pretrained
from distilgan.models.encoder import LatentEncoder
from distilgan.teachers import load_teacher
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc, save_png
from tests._teacher_fixtures import make_onnx_teacher, make_torchscript_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

Z_DIM, CLASSES, RES = 8, 3, 32


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "t.pt"
    make_torchscript_teacher(path, z_dim=Z_DIM, num_classes=CLASSES, resolution=RES)
    return path


@pytest.fixture(scope="module")
def teacher_images(teacher_file, tmp_path_factory):
    """Six images the teacher drew itself for class 1 (an exact inversion exists), as PNG files."""
    teacher = load_teacher(f"torchscript:{teacher_file}")
    z = np.random.default_rng(5).standard_normal((6, Z_DIM)).astype(np.float32)
    images = nchw_to_nhwc(float_to_uint8(teacher.generate(z, np.ones(6, np.int64))))
    folder = tmp_path_factory.mktemp("inputs")
    for i, image in enumerate(images):
        save_png(image, folder / f"img{i}.png")
    return folder, z, images


def test_teacher_gradients_flow_to_z_only(teacher_file) -> None:
    teacher = load_teacher(f"torchscript:{teacher_file}")
    z = torch.zeros(2, Z_DIM, requires_grad=True)
    teacher.torch_generate(z, torch.tensor([0, 1])).sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    np.testing.assert_allclose(teacher.torch_generate(z.detach(), torch.tensor([0, 1])).detach().numpy(),
                               teacher.generate(np.zeros((2, Z_DIM), np.float32), np.array([0, 1])), atol=1e-5)


def test_optimisation_recovers_the_teachers_own_image(teacher_file, teacher_images) -> None:
    from distilgan.utils.images import nhwc_to_nchw, uint8_to_float

    teacher = load_teacher(f"torchscript:{teacher_file}")
    _, _, pixels = teacher_images
    images = torch.from_numpy(uint8_to_float(nhwc_to_nchw(pixels)))
    labels = torch.ones(len(pixels), dtype=torch.long)
    _, start = invert(teacher, images, labels, InversionSettings(steps=0, starts=4), seed=0)
    z, loss = invert(teacher, images, labels, InversionSettings(steps=150, lr=0.05, starts=4, feature_weight=0), seed=0)
    assert z.shape == (6, Z_DIM) and loss.shape == (6,)
    assert float(loss.mean()) < 0.2 * float(start.mean())  # the optimisation finds a much closer z
    again, _ = invert(teacher, images, labels, InversionSettings(steps=150, lr=0.05, starts=4, feature_weight=0), seed=0)
    np.testing.assert_array_equal(z, again)  # a pure function of its inputs: resume relies on it


def test_perceptual_distance_is_zero_for_equal_images_and_grows() -> None:
    from distilgan.models.classifiers import build_classifier

    distance = PerceptualDistance(build_classifier("vgg11_bn_x0_25"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    target = distance.features(x)
    same, near, far = (float(distance(x + d, target).mean()) for d in (0.0, 0.05 * torch.randn_like(x), 0.5 * torch.randn_like(x)))
    assert same == pytest.approx(0.0, abs=1e-6) and 0 < near < far


def test_train_encoder_learns_z_and_invert_uses_it(teacher_file, teacher_images, tmp_path, cli) -> None:
    from distilgan.store import write_store

    store = tmp_path / "store"
    write_store(load_teacher(f"torchscript:{teacher_file}"), store, per_class=64, seed=0, shard_size=96, progress=False)
    run = tmp_path / "enc"
    code, out, err = cli("train-encoder", "--data", store, "--out", run, "--batch-size", "32", "--max-steps", "60",
                         "--ndf", "8", "--log-every", "5", "--lr-g", "0.002", "--quiet")
    assert code == 0, err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "g/latent" in line]
    assert log[-1]["g/latent"] < 0.5 * log[0]["g/latent"]
    encoder = load_pretrained(run / "generator")
    assert isinstance(encoder, LatentEncoder) and encoder.z_dim == Z_DIM
    assert list((run / "grids").glob("*.png"))

    folder, _, _ = teacher_images
    spec = f"torchscript:{teacher_file}"
    code, out, err = cli("invert", "--teacher", spec, "--in", folder, "--label", "1", "--to", "0", "2", "--out",
                         tmp_path / "enc-only", "--encoder", run / "generator", "--steps", "0", "--quiet")
    assert code == 0, err
    record = json.loads((tmp_path / "enc-only" / "invert.json").read_text())
    assert record["images"] == 6 and record["settings"]["inversion"]["steps"] == 0
    assert sorted(p.name for p in (tmp_path / "enc-only" / "0").iterdir()) == [f"img{i}.png" for i in range(6)]
    # the encoder's z also works for a teacher that gives no gradients
    onnx = tmp_path / "t.onnx"
    make_onnx_teacher(onnx, z_dim=Z_DIM, num_classes=CLASSES, resolution=RES)
    code, _, err = cli("invert", "--teacher", f"onnx:{onnx}", "--in", folder, "--label", "1", "--out",
                       tmp_path / "onnx-enc", "--encoder", run / "generator", "--steps", "0", "--quiet")
    assert code == 0, err


def test_invert_cli_writes_edits_and_resumes(teacher_file, teacher_images, tmp_path, cli) -> None:
    folder, _, pixels = teacher_images
    spec = f"torchscript:{teacher_file}"
    out = tmp_path / "inv"
    args = ["invert", "--teacher", spec, "--in", folder, "--label", "1", "--to", "2", "--out", out, "--steps", "20",
            "--batch-size", "4", "--starts", "2", "--feature-net", "none", "--quiet"]
    code, text, err = cli(*args)
    assert code == 0, err
    assert "6 images of 1 (6 now, 0 resumed)" in text
    assert len(list((out / "recon").glob("*.png"))) == 6 and len(list((out / "2").glob("*.png"))) == 6
    latents = np.load(out / "latents.npz")
    assert latents["z"].shape == (6, Z_DIM) and list(latents["names"]) == [f"img{i}.png" for i in range(6)]
    (out / "chunks" / "chunk-00001.npz").unlink()  # as if killed during the second chunk
    code, text, err = cli(*args)
    assert code == 0 and "(2 now, 4 resumed)" in text, err
    np.testing.assert_array_equal(np.load(out / "latents.npz")["z"], latents["z"])
    code, _, err = cli(*[a if a != "20" else "30" for a in args])
    assert code == 2 and "another inversion" in err and len(err.strip().splitlines()) == 1
    # killed before the end (no invert.json yet): the settings written before the first chunk still guard it
    (out / "invert.json").unlink()
    code, _, err = cli(*[a if a != "4" else "2" for a in args])  # another --batch-size would misplace z's
    assert code == 2 and "another batch size" in err, err
    chunk = out / "chunks" / "chunk-00000.npz"
    chunk.write_bytes(b"not a zip")  # a damaged chunk is inverted again, not trusted
    code, text, err = cli(*args)
    assert code == 0 and "(4 now, 2 resumed)" in text and "unreadable" in text, err
    np.testing.assert_array_equal(np.load(out / "latents.npz")["z"], latents["z"])


def test_invert_bad_input_is_one_line(teacher_file, teacher_images, tmp_path, cli) -> None:
    folder, _, _ = teacher_images
    onnx = tmp_path / "t.onnx"
    make_onnx_teacher(onnx, z_dim=Z_DIM, num_classes=CLASSES, resolution=RES)
    cases = [
        (["--teacher", f"onnx:{onnx}", "--label", "1"], "gives no gradients"),
        (["--teacher", f"torchscript:{teacher_file}", "--label", "1", "--output-range", "0", "0.5"], "outside its declared range"),
        (["--teacher", f"torchscript:{teacher_file}", "--label", "1", "--steps", "0"], "needs an --encoder"),
        (["--teacher", f"torchscript:{teacher_file}", "--label", "7"], "7"),
        (["--teacher", f"torchscript:{teacher_file}", "--label", "1", "--encoder", tmp_path], "config.json"),
    ]
    for extra, message in cases:
        code, _, err = cli("invert", "--in", folder, "--out", tmp_path / "x", "--feature-net", "none", "--quiet", *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "x").exists()  # refused before any folder was made


def test_torch_generate_maps_the_declared_range_like_generate(tmp_path) -> None:
    path = tmp_path / "t01.pt"
    make_torchscript_teacher(path, z_dim=Z_DIM, num_classes=CLASSES, resolution=RES, output_range=(0.0, 1.0))
    teacher = load_teacher(f"torchscript:{path}", output_range=(0.0, 1.0))
    z = np.random.default_rng(0).standard_normal((3, Z_DIM)).astype(np.float32)
    labels = np.array([0, 1, 2])
    drawn = teacher.torch_generate(torch.from_numpy(z), torch.from_numpy(labels)).detach().numpy()
    np.testing.assert_allclose(drawn, teacher.generate(z, labels), atol=1e-5)
    assert drawn.min() < -0.5  # [0, 1] was mapped to [-1, 1]


def test_train_encoder_resumes_exactly(teacher_file, tmp_path, cli) -> None:
    from distilgan.store import write_store

    store = tmp_path / "store"
    write_store(load_teacher(f"torchscript:{teacher_file}"), store, per_class=16, seed=0, shard_size=48, progress=False)
    args = ["--data", store, "--batch-size", "8", "--ndf", "8", "--teacher", "none", "--quiet"]
    assert cli("train-encoder", "--out", tmp_path / "a", *args, "--max-steps", "8")[0] == 0
    assert cli("train-encoder", "--out", tmp_path / "b", *args, "--max-steps", "3")[0] == 0
    code, _, err = cli("train-encoder", "--out", tmp_path / "b", "--resume", "--max-steps", "8", "--quiet")
    assert code == 0, err
    a, b = load_pretrained(tmp_path / "a" / "generator"), load_pretrained(tmp_path / "b" / "generator")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_precision_probe_runs_the_i2i_and_encoder_steps() -> None:
    from distilgan.models.translator import PatchDiscriminator, UNetTranslator
    from distilgan.train.encoder_objective import EncoderInputs
    from distilgan.train.i2i_data import PairInputs, PairSplit
    from distilgan.train.precision import probe_speedup

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    edits = np.array([0, 1] * 3)
    split = PairSplit(images, images, edits, images[:2], images[:2], edits[:2], edits[:2], {})
    fp32, bf16 = probe_speedup(UNetTranslator(ngf=4, num_edits=2), PatchDiscriminator(ndf=4, num_edits=2),
                               torch.device("cpu"), 4, repeats=1, probe_loss=PairInputs(split, 0).probe_loss)
    assert fp32 > 0 and bf16 > 0
    encoder = LatentEncoder(z_dim=Z_DIM, num_classes=CLASSES, ndf=4)
    fp32, bf16 = probe_speedup(encoder, None, torch.device("cpu"), 4, repeats=1,
                               probe_loss=EncoderInputs(images, edits, 0).probe_loss)
    assert fp32 > 0 and bf16 > 0
