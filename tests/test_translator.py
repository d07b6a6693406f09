"""Image-to-image students (UNetTranslator, PatchDiscriminator), the ImageTranslator API and `distilgan translate`."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from distilgan.errors import UserError
from distilgan.models import ARCHITECTURES, DiStyleGANGenerator, PatchDiscriminator, UNetTranslator, load_pretrained
from distilgan.models.macs import count_macs, count_parameters
from distilgan.pipeline import ImageTranslator

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EDITS = [{"name": "automobile:truck", "source": 1, "target": 9}, {"name": "cat:dog", "source": "cat", "target": "dog"},
         {"name": "dog:cat", "source": "dog", "target": "cat"}]


def images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def three_edit_translator(**overrides) -> UNetTranslator:
    kwargs = dict(resolution=16, ngf=4, num_edits=3, edits=EDITS, class_names=CLASSES)
    kwargs.update(overrides)
    return UNetTranslator(**kwargs)


@pytest.mark.parametrize("kwargs, widths", [
    (dict(resolution=8, ngf=4), [4, 8]),
    (dict(resolution=16, ngf=4, depth=2, separable=True, norm="instance"), [4, 8, 16]),
    (dict(resolution=32, ngf=2, norm="none", max_width=6), [2, 4, 6, 6]),
    (dict(resolution=16, ngf=2, depth=4), [2, 4, 8, 16, 16]),  # down to a 1x1 bottleneck
    (dict(resolution=24, ngf=2, depth=3, channels=1), [2, 4, 8, 16]),  # not a power of two: 3x3 bottleneck
    (dict(resolution=16, ngf=4, num_edits=3, separable=True), [4, 8, 16]),
])
def test_translator_shapes_range_and_config(kwargs, widths):
    torch.manual_seed(0)
    model = UNetTranslator(**kwargs)
    size, channels = model.resolution, model.channels
    assert model.widths == widths and model.config["depth"] == len(widths) - 1
    edits = torch.arange(3) % model.num_edits if model.num_edits > 1 else None
    for train in (True, False):
        model.train(train)
        out = model(images(3, size, channels), edits)
        assert out.shape == (3, channels, size, size)
        assert out.abs().max() <= 1.0 and torch.isfinite(out).all()


def test_translator_refuses_bad_settings_in_one_line():
    for kwargs, words in [
        (dict(resolution=12), "power of two"),
        (dict(resolution=16, depth=5), "depth 5"),
        (dict(norm="group"), "unknown norm"),
        (dict(resolution=16, depth=4, norm="instance"), "instance norm"),
        (dict(num_edits=2, edit_names=["a"]), "1 edit names"),
        (dict(num_edits=2, edit_names=["a", "a"]), "not unique"),
        (dict(num_edits=1, edits=[{"source": 1}]), "no name"),
        (dict(ngf=8, max_width=4), "max_width"),
    ]:
        with pytest.raises(UserError, match=words) as info:
            UNetTranslator(**kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="takes"):
        UNetTranslator(resolution=8, ngf=2)(images(1, 16))
    with pytest.raises(UserError, match="pass edits"):
        three_edit_translator()(images(1, 16))


def test_a_few_steps_fit_a_fixed_pair_batch():
    torch.manual_seed(0)
    model = UNetTranslator(resolution=16, ngf=8)
    x = images(4, 16, seed=1)
    y = -x[:, [2, 1, 0]] * 0.8  # a colour edit a U-Net can learn in a few steps
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = (model(x) - y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]  # the first step already helps
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():  # and it holds with the running statistics too
        assert (model.eval()(x) - y).abs().mean().item() < 0.6 * losses[0]


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = three_edit_translator(separable=True)
    model(images(8, 16), torch.arange(8) % 3)  # move the BatchNorm running statistics off their init
    model.eval()
    model.save_pretrained(tmp_path / "t")
    x, e = images(4, 16, seed=2), torch.tensor([0, 1, 2, 1])
    for loaded in (UNetTranslator.from_pretrained(tmp_path / "t"), load_pretrained(tmp_path / "t")):
        assert type(loaded) is UNetTranslator and not loaded.training
        assert loaded.config == model.config
        assert loaded.edit_names == ["automobile:truck", "cat:dog", "dog:cat"] and loaded.class_names == CLASSES
        assert loaded.edits == EDITS
        with torch.no_grad():
            assert torch.equal(loaded(x, e), model(x, e))
    d = PatchDiscriminator(resolution=16, ndf=4, num_edits=3)
    d.save_pretrained(tmp_path / "d")
    assert type(load_pretrained(tmp_path / "d")) is PatchDiscriminator
    assert ARCHITECTURES["UNetTranslator"] is UNetTranslator and ARCHITECTURES["PatchDiscriminator"] is PatchDiscriminator


def test_macs_closed_form_and_the_separable_variant_is_lighter():
    model = UNetTranslator(resolution=8, ngf=4)  # depth 1: one down, bottleneck at 4x4, one up
    px8, px4 = 8 * 8, 4 * 4
    expected = (px8 * 4 * 3 * 9  # stem 3 -> 4
                + px4 * 8 * 4 * 9 + px4 * 8 * 8 * 9  # down: stride-2 4 -> 8, then 8 -> 8
                + px4 * 8 * 8 * 9  # bottleneck
                + px8 * 4 * 12 * 9 + px8 * 4 * 4 * 9  # up: (8 + 4 skip) -> 4, then 4 -> 4
                + px8 * 3 * 4 * 9)  # to the image
    assert count_macs(model).macs_per_image == expected
    plain, light = UNetTranslator(ngf=16), UNetTranslator(ngf=16, separable=True)
    plain_count, light_count = count_macs(plain), count_macs(light)
    assert light_count.params < plain_count.params / 4
    assert light_count.macs_per_image < plain_count.macs_per_image / 4
    assert count_parameters(light) == light_count.params


def test_edit_conditioning_changes_the_output_and_names_resolve():
    torch.manual_seed(0)
    model = three_edit_translator().eval()
    x = images(1, 16).expand(3, -1, -1, -1)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 1, 2]))
        assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3
        # a float one-hot is the same condition as the index
        torch.testing.assert_close(model(x, torch.eye(3)), out)
        # the bottleneck embedding matters on its own (not only the input planes)
        model.edit_embedding.weight.zero_()
        assert (model(x, torch.tensor([0, 1, 2])) - out).abs().max() > 1e-4
    for given, index in [("automobile:truck", 0), ("Automobile -> Truck", 0), ("truck", 0), ("1:9", 0),
                         ("cat to dog", 1), ("dog->cat", 2), (2, 2), ("1", 1), (np.int64(1), 1)]:
        assert model.edit_index(given) == index, given
    for given, words in [("cat", "ambiguous"), ("horse", "unknown edit 'horse'"), (3, "outside 0..2"), (True, "not an edit")]:
        with pytest.raises(UserError, match=words) as info:
            model.edit_index(given)
        assert "automobile:truck" in str(info.value) or "ambiguous" in words


def test_patch_discriminator_shapes_features_and_receptive_field():
    torch.manual_seed(0)
    d = PatchDiscriminator(ndf=8)  # the defaults: 32x32, n_layers 2
    x, y = images(2, 32), images(2, 32, seed=1).requires_grad_()
    logits, features = d(x, y)
    assert logits.shape == (2, 1, 6, 6) and d.patch_map() == 6
    assert [tuple(f.shape) for f in features] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 7, 7)]
    assert d.receptive_field() == 34
    assert PatchDiscriminator(n_layers=3).receptive_field() == 70  # pix2pix's 70x70 PatchGAN
    assert PatchDiscriminator(n_layers=3, ndf=4)(x, x)[0].shape == (2, 1, 2, 2)
    logits.mean().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0  # the adversarial loss reaches the translator
    conditioned = PatchDiscriminator(resolution=16, ndf=4, num_edits=3)
    x16 = images(1, 16).expand(3, -1, -1, -1)
    out = conditioned(x16, x16, torch.tensor([0, 1, 2]))[0]
    assert (out[0] - out[1]).abs().max() > 0
    with pytest.raises(UserError, match="pass edits"):
        conditioned(x16, x16)
    with pytest.raises(UserError, match="fewer n_layers"):
        PatchDiscriminator(resolution=16, n_layers=3)
    counted = count_macs(d, x, y)  # the default example inputs are (images, labels): give D's own
    assert counted.macs_per_image > 0 and counted.params == count_parameters(d)


@pytest.mark.parametrize("num_edits", [1, 3])
def test_onnx_export_matches_torch(tmp_path, num_edits):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = UNetTranslator(resolution=16, ngf=4, num_edits=num_edits, separable=num_edits > 1).eval()
    args = (images(2, 16), torch.tensor([0, num_edits - 1])) if num_edits > 1 else (images(2, 16),)
    names = ["images", "edits"][: len(args)]
    path = tmp_path / "t.onnx"
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["out"], opset_version=17,
                          dynamic_axes={n: {0: "batch"} for n in [*names, "out"]}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, e = images(5, 16, seed=3), torch.tensor([0, 1, 2, 0, 1]) % num_edits
    feed = {"images": x.numpy(), "edits": e.numpy()} if num_edits > 1 else {"images": x.numpy()}
    with torch.no_grad():
        expected = model(x, e if num_edits > 1 else None).numpy()
    np.testing.assert_allclose(session.run(None, feed)[0], expected, atol=1e-5)


# --- the user API and the command ----------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("translators")
    torch.manual_seed(0)
    UNetTranslator(resolution=16, ngf=4, edits=EDITS[:1], class_names=CLASSES).save_pretrained(root / "one")
    three_edit_translator().save_pretrained(root / "three")
    DiStyleGANGenerator(z_dim=8, num_classes=2, project_dim=8, ngf=16, resolution=16).save_pretrained(root / "g")
    return root


def random_png(path, size=16, mode="RGB", seed=0):
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if channels == 1 else array, mode).save(path)
    return array


def test_image_translator_api(checkpoints):
    t = ImageTranslator.from_pretrained(checkpoints / "three")
    assert t.edits == ["automobile:truck", "cat:dog", "dog:cat"] and (t.resolution, t.channels) == (16, 3)
    arrays = np.stack([random_png(checkpoints / "api" / f"{i}.png", seed=i) for i in range(3)])
    pil = [Image.fromarray(a) for a in arrays]
    from_np = t.translate(arrays, edit="truck", output="np")
    assert from_np.dtype == np.uint8 and from_np.shape == (3, 16, 16, 3)
    assert np.array_equal(np.stack([np.asarray(p) for p in t.translate(pil, edit=0)]), from_np)
    single = t.translate(pil[1], edit="automobile:truck")
    assert isinstance(single, Image.Image) and np.array_equal(np.asarray(single), from_np[1])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1
    pt = t.translate(x, edit=0, output="pt", batch_size=2)
    with torch.no_grad():
        torch.testing.assert_close(pt, t.model(x, torch.zeros(3, dtype=torch.long)))
    per_image = t.translate(arrays, edit=["cat:dog", 2, "truck"], output="np")
    assert np.array_equal(per_image[2], from_np[2]) and not np.array_equal(per_image[0], from_np[0])
    assert t.translate(pil[0].convert("L"), edit=0).size == (16, 16)  # gray in, converted to RGB
    big = pil[0].resize((40, 40))
    with pytest.raises(UserError, match="40x40 but the translator takes 16x16"):
        t.translate(big, edit=0)
    assert t.translate(big, edit=0, resize=True).size == (16, 16)
    with pytest.raises(UserError, match="choose one with edit="):
        t.translate(arrays)
    with pytest.raises(UserError, match="uint8"):
        t.translate(arrays.astype(np.float32), edit=0)
    assert ImageTranslator.from_pretrained(checkpoints / "one").translate(arrays, output="np").shape == (3, 16, 16, 3)
    with pytest.raises(UserError, match="not an image translator"):
        ImageTranslator.from_pretrained(checkpoints / "g")


def test_translate_cli_on_a_folder_keeps_names_and_writes_a_strip(cli, checkpoints, tmp_path):
    src = tmp_path / "in"
    arrays = {name: random_png(src / name, seed=i) for i, name in enumerate(["a.png", "b.png", "sub/c.png"])}
    random_png(src / "gray.png", mode="L", seed=5)
    Image.fromarray(arrays["a.png"]).save(src / "a.jpg")  # a.png is a.png's: this one becomes a-1.png
    (src / "notes.txt").write_text("not an image")
    code, out, err = cli("translate", "--checkpoint", checkpoints / "three", "--in", src, "--out", tmp_path / "out",
                         "--edit", "automobile:truck", "--strip", tmp_path / "strip.png", "--batch-size", "2")
    assert code == 0, err
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["a-1.png", "a.png", "b.png", "gray.png", "sub/c.png"]
    assert "translated 5 images (edit automobile:truck)" in out and "s per image" in out
    assert "skipped 1 files" in err and "converted 1 images (1 L) to RGB" in err and "a-1.png" in err
    t = ImageTranslator.from_pretrained(checkpoints / "three")
    for name, array in arrays.items():  # PNG in, PNG out: what the API makes (kernels picked for another
        result = np.asarray(Image.open(tmp_path / "out" / name))  # batch shape may move a value by one step)
        expected = t.translate(array[None], edit=0, output="np")[0]
        assert result.shape == (16, 16, 3) and np.abs(result.astype(int) - expected).max() <= 1
        assert (result != expected).mean() < 0.02
    assert Image.open(tmp_path / "strip.png").size == (5 * 18 + 2, 2 * 18 + 2)  # 5 pairs: inputs above outputs


def test_translate_cli_reads_a_zip_and_resizes_on_request(cli, checkpoints, tmp_path):
    archive = tmp_path / "images.zip"
    random_png(tmp_path / "x.png", size=24)
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tmp_path / "x.png", "set/x.png")
        z.write(tmp_path / "x.png", "../evil.png")  # names climbing out of the archive are not read
    code, _, err = cli("translate", "--checkpoint", checkpoints / "one", "--in", archive, "--out", tmp_path / "out")
    assert code == 2 and "24x24 but the translator takes 16x16 images (pass --resize" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    code, out, err = cli("translate", "--checkpoint", checkpoints / "one", "--in", archive, "--out", tmp_path / "out", "--resize")
    assert code == 0, err
    assert "resized 1 images to 16x16" in err and "translated 1 images (edit automobile:truck)" in out
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["out/set/x.png", "x.png"]
    assert np.asarray(Image.open(tmp_path / "out/set/x.png")).shape == (16, 16, 3)


@pytest.mark.parametrize("case, words", [
    ("not_an_image", "is not an image"),
    ("wrong_size", "pass --resize"),
    ("unknown_edit", "--edit: unknown edit 'horse' (this translator's edits: automobile:truck, cat:dog, dog:cat)"),
    ("missing_edit", "--edit is required: this translator does 3 edits (automobile:truck, cat:dog, dog:cat)"),
    ("missing_input", "no such file or folder"),
    ("out_is_in", "is also an --in folder"),
    ("not_a_translator", "not an image translator"),
    ("strip_not_png", "must be a .png"),
])
def test_translate_cli_bad_input_is_one_line(cli, checkpoints, tmp_path, case, words):
    src = tmp_path / "in"
    random_png(src / "ok.png")
    ckpt, edit, inputs, out, extra = checkpoints / "three", ["--edit", "0"], [src], tmp_path / "out", []
    if case == "not_an_image":
        (tmp_path / "fake.png").write_bytes(b"not a png")
        inputs = [src, tmp_path / "fake.png"]
    elif case == "wrong_size":
        random_png(src / "big.png", size=32)
    elif case == "unknown_edit":
        edit = ["--edit", "horse"]
    elif case == "missing_edit":
        edit = []
    elif case == "missing_input":
        inputs = [tmp_path / "nowhere"]
    elif case == "out_is_in":
        out = src
    elif case == "not_a_translator":
        ckpt = checkpoints / "g"
    elif case == "strip_not_png":
        extra = ["--strip", tmp_path / "strip.jpg"]
    code, stdout, err = cli("translate", "--checkpoint", ckpt, "--in", *inputs, "--out", out, *edit, *extra)
    assert code == 2 and words in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distilgan: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert (src / "ok.png").is_file() and np.asarray(Image.open(src / "ok.png")).shape == (16, 16, 3)  # inputs untouched
