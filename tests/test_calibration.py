"""Classifier zoo, synthetic calibration sources, INT8 calibration and classifier training."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from distilgan.models.classifiers import CLASSIFIERS, build_classifier, load_classifier

# exact parameter counts of the zoo at 10 classes (the CIFAR ResNets match He et al.: 0.27M ... 0.85M)
PARAMETERS = {
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "vgg11_bn": 9_228_362, "vgg16_bn": 14_724_042, "mobilenetv2": 2_236_682, "mobilenetv2_x0_5": 700_490,
    "shufflenetv2": 1_263_854, "shufflenetv2_x0_5": 352_042, "repvgg_a0": 7_840_874,
    # narrow variants trained on the 2-core CPU (docs/calibration.md)
    "vgg11_bn_x0_25": 579_098, "repvgg_a0_x0_25": 497_186, "mobilenetv2_x0_25": 250_922,
}


def resnet_file(shared: Path, depth: int) -> Path:
    return next((shared / "weights" / "cifar10-resnet").glob(f"resnet{depth}-*.th"))


def write_tree(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A class-folder dataset ROOT/<split>/<class>/NNNN.png from uint8 NHWC arrays."""
    from PIL import Image

    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"c{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def lossless(shared):
    data = np.load(shared / "datasets" / "cifar10" / "lossless-and-labels.npz")
    test = data["test_batch_first_images"]
    train = data["data_batch_1_first_images"]
    return {"test": (test, data["test_batch_labels"][: len(test)].astype(np.int64)),
            "train": (train, data["data_batch_1_labels"][: len(train)].astype(np.int64)),
            "test_labels_all": data["test_batch_labels"].astype(np.int64)}


@pytest.fixture(scope="module")
def cifar_tree(lossless, tmp_path_factory):
    """200 lossless train and 400 lossless test images as a class-folder tree (all 10 classes)."""
    images, labels = lossless["train"]
    test_images, test_labels = lossless["test"]
    return write_tree(tmp_path_factory.mktemp("cifar"), {"train": (images[:200], labels[:200]),
                                                         "test": (test_images[:400], test_labels[:400])})


# --- zoo --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_zoo_forward_shape_and_parameters(name):
    model = build_classifier(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert model.num_parameters() == PARAMETERS[name]


@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_a0_x0_25"])
def test_repvgg_reparameterization_gives_same_outputs(name, tmp_path):
    model = build_classifier(name)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics, so the fusion is really tested
        model(torch.randn(4, 3, 16, 16) * 2 + 0.3)
    model.eval()
    plain = model.reparameterize()
    assert plain.config["deployed"] and all(len(list(b.children())) == 1 for b in plain.blocks)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    x = torch.randn(2, 3, 16, 16)  # any size works (global pooling); small keeps the test fast
    with torch.no_grad():
        reference = model(x)
        assert torch.allclose(plain(x), reference, atol=1e-4, rtol=1e-4)
        plain.save_pretrained(tmp_path / "plain")
        assert torch.allclose(load_classifier(tmp_path / "plain")(x), reference, atol=1e-4, rtol=1e-4)


def test_save_load_keeps_weights_and_normalisation(tmp_path):
    model = build_classifier("shufflenetv2_x0_5", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    model.save_pretrained(tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.mean == [0.5, 0.5, 0.5] and loaded.std == [0.25, 0.25, 0.25]
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(loaded.predict(images), model.predict(images))
    # the one preprocessing: (u / 255 - mean) / std
    expected = (images.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.25
    assert np.allclose(model.preprocess(images), expected, atol=1e-5)


# --- the shared CIFAR ResNets -----------------------------------------------------------------------

def test_resnet20_lossless_accuracy(shared, lossless):
    model = load_classifier(resnet_file(shared, 20))
    assert model.config["depth"] == 20 and model.mean == [0.485, 0.456, 0.406]
    images, labels = lossless["test"]
    accuracy = (model.predict(images) == labels).mean() * 100
    assert len(images) == 1017
    assert 91.0 <= accuracy <= 92.2, accuracy  # 91.6 per ../shared/README.md


def test_shipped_classifiers_load_by_name_and_classify(lossless):
    """The CPU-trained zoo shipped in distilgan/pretrained: loadable by name, and on the 1,017 lossless
    test images within a few points of the JPEG-test accuracy their card reports (lossless is easier)."""
    from distilgan.errors import UserError
    from distilgan.models.classifiers import shipped_classifiers

    names = shipped_classifiers()
    assert "cifar10-vgg11_bn_x0_25" in names
    images, labels = lossless["test"]
    for name in names:
        model = load_classifier(name)
        assert model.config["architecture"] == CLASSIFIERS[name.removeprefix("cifar10-")][0].__name__
        accuracy = (model.predict(images) == labels).mean() * 100
        assert 50 <= model.metadata["test_accuracy"] - 3 <= accuracy <= model.metadata["test_accuracy"] + 6, (name, accuracy)
    with pytest.raises(UserError, match="not a classifier"):
        load_classifier("cifar10-student")
    with pytest.raises(UserError, match="shipped one: cifar10-"):
        load_classifier("cifar10-nonesuch")


def test_resnet20_first_2000_jpeg_test_images(shared, lossless):
    from PIL import Image

    labels = lossless["test_labels_all"][:2000]
    seen = np.zeros(10, np.int64)
    images = []
    with zipfile.ZipFile(shared / "datasets" / "cifar10" / "cifar10-jpeg.zip") as archive:
        names = {Path(n).parts[-2:]: n for n in archive.namelist() if n.endswith(".jpg") and "/test/" in f"/{n}"}
        classes = sorted({c for c, _ in names})
        for label in labels:  # image k of a class is the class's k-th image in the official order
            name = names[(classes[label], f"{seen[label]:04d}.jpg")]
            seen[label] += 1
            images.append(np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB")))
    model = load_classifier(resnet_file(shared, 20))
    accuracy = (model.predict(np.stack(images)) == labels).mean() * 100
    assert accuracy >= 80.0, accuracy


# --- calibration sources ----------------------------------------------------------------------------

def test_sources_are_deterministic_and_as_defined():
    from distilgan.calibration.sources import balanced_subset, calibration_set

    model = build_classifier("resnet20")
    noise = calibration_set("noise", model, 200, seed=3)
    assert noise.inputs.shape == (200, 3, 32, 32) and noise.inputs.dtype == np.float32
    assert abs(noise.inputs.mean()) < 0.02 and abs(noise.inputs.std() - 1) < 0.02  # N(0, 1) normalised
    assert np.array_equal(noise.inputs, calibration_set("noise", model, 200, seed=3).inputs)
    assert not np.array_equal(noise.inputs, calibration_set("noise", model, 200, seed=4).inputs)
    uniform = calibration_set("uniform", model, 100, seed=0)
    assert uniform.images.min() == 0 and uniform.images.max() == 255
    assert np.allclose(uniform.inputs, model.preprocess(uniform.images))
    pixel = calibration_set("noise-pixel", model, 100, seed=0)
    assert abs(pixel.images.mean() / 255 - np.mean(model.mean)) < 0.02
    labels = np.repeat(np.arange(10), 50)
    rows = balanced_subset(labels, 35, 10, seed=1)
    assert len(set(rows)) == 35 and np.bincount(labels[rows]).tolist() == [4] * 5 + [3] * 5


def test_student_and_teacher_sources(tmp_path):
    from distilgan.calibration.sources import calibration_set, source_available
    from distilgan.models import DiStyleGANGenerator

    classifier = build_classifier("resnet20").eval()
    DiStyleGANGenerator(z_dim=16, project_dim=8, ngf=32).eval().save_pretrained(tmp_path / "student")
    student = calibration_set("student", classifier, 20, seed=1, student=str(tmp_path / "student"))
    assert student.inputs.shape == (20, 3, 32, 32) and student.images.dtype == np.uint8
    assert np.allclose(student.inputs, classifier.preprocess(student.images))  # same path as real images
    filtered = calibration_set("student", classifier, 20, seed=1, student=str(tmp_path / "student"), keep=0.5)
    assert len(filtered) == 20 and filtered.description["confidence_filter"] == {"keep": 0.5, "drawn": 40}
    teacher = calibration_set("teacher", classifier, 10, seed=0, teacher="builtin:toy")
    assert teacher.images.shape == (10, 32, 32, 3) and teacher.images.std() > 10
    assert source_available("student", None, None) and source_available("teacher", None, "builtin:toy") is None


def test_confidence_filter_keeps_the_most_confident_per_class():
    from distilgan.calibration.sources import filter_by_confidence

    class Fixed(torch.nn.Module):  # "confidence" is the image's first pixel value
        resolution, num_classes = 32, 2

        def preprocess(self, images):
            return images.astype(np.float32)

        def forward(self, x):
            v = torch.from_numpy(np.asarray(x))[:, 0, 0, 0] / 255.0
            return torch.stack([v * 10, -v * 10], 1)

    images = np.zeros((8, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = [10, 200, 50, 250, 100, 30, 90, 0]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    kept = filter_by_confidence(Fixed(), images, labels, keep=0.5)
    assert kept.tolist() == [1, 3, 5, 7]  # class 0 wants bright, class 1 dark


def test_study_gap_closed_table_and_plot(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from calibration_study import markdown, plot, summarise

    runs = [{"model": "m", "source": s, "size": 10, "keep": 1.0, "seed": seed, "drop": d, "int8_accuracy": 90 - d}
            for s, drops in {"real": (0.1, 0.3), "noise": (1.1, 0.9), "uniform": (0.6, 0.6)}.items()
            for seed, d in enumerate(drops)]
    rows, gaps = summarise(runs, {"m": 90.0})
    assert [r["source"] for r in rows] == ["real", "uniform", "noise"]
    assert rows[0]["drop_mean"] == pytest.approx(0.2) and rows[0]["drop_sd"] == pytest.approx(0.1414, abs=1e-3)
    (gap,) = gaps
    # seed 0: (1.1 - 0.6) / (1.1 - 0.1) = 0.5; seed 1: (0.9 - 0.6) / (0.9 - 0.3) = 0.5
    assert gap["source"] == "uniform" and gap["gap_closed_mean_over_seeds"] == pytest.approx(0.5) and gap["separable"]
    assert "| m | 90.00 | noise |" in markdown(rows, gaps)
    plot(rows, tmp_path / "study.png")
    from PIL import Image

    assert Image.open(tmp_path / "study.png").size[0] > 200


def test_study_combine_merges_per_model_studies(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from calibration_study import combine, wide_table

    parts = []
    for model, fp32 in (("a", 90.0), ("b", 80.0)):
        runs = [{"model": model, "source": s, "size": 10, "keep": 1.0, "seed": seed, "drop": d, "int8_accuracy": fp32 - d,
                 "seconds": 1.0} for s, d in (("real", 0.1), ("noise", 1.0), ("student", 0.4)) for seed in (0, 1)]
        parts.append(tmp_path / f"{model}.json")
        parts[-1].write_text(json.dumps({"protocol": {"p": 1}, "models": {model: {"fp32_accuracy": fp32}}, "runs": runs}))
    assert combine([str(p) for p in parts], tmp_path / "all.json") == 0
    merged = json.loads((tmp_path / "all.json").read_text())
    assert set(merged["models"]) == {"a", "b"} and len(merged["runs"]) == 12 and merged["protocol"] == {"p": 1}
    gaps = {g["model"]: g["gap_closed_of_means"] for g in merged["gap_closed"]}
    assert gaps == {"a": pytest.approx(6 / 9), "b": pytest.approx(6 / 9)}  # (1.0 - 0.4) / (1.0 - 0.1)
    assert {r["fp32_accuracy"] for r in merged["table"]} == {90.0, 80.0} and (tmp_path / "all.png").exists()
    wide = wide_table(merged["table"], merged["gap_closed"])
    assert "| a | 90.00 | 10 | 0.10 | 0.40 | 1.00 | +0.30 | 0.67 |" in wide.splitlines()
    with pytest.raises(SystemExit, match="repeats model"):
        combine([str(parts[0]), str(parts[0])], tmp_path / "again.json")
    other = json.loads(parts[1].read_text())
    other["protocol"]["activation_ranges"] = "minmax"
    parts[1].write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="different activation ranges"):
        combine([str(p) for p in parts], tmp_path / "mixed.json")


# --- calibrate CLI ----------------------------------------------------------------------------------

def test_activation_ranges_auto_takes_minmax_for_generated_sources(capsys):
    from distilgan.commands.calibrate import resolve_activation_ranges

    assert resolve_activation_ranges("auto", "student") == "minmax"
    assert "student images are smoother" in capsys.readouterr().out  # the one-line notice says why
    assert resolve_activation_ranges("auto", "teacher") == "minmax"
    for source in ("real", "noise", "noise-pixel", "uniform", "folder"):
        assert resolve_activation_ranges("auto", source) == "mean-minmax"
    assert capsys.readouterr().out.count("\n") == 1  # only the generated source printed a notice
    assert resolve_activation_ranges("mean-minmax", "student") == "mean-minmax"  # a given choice stays
    assert resolve_activation_ranges("minmax", "real") == "minmax"


def test_calibrate_default_on_a_generated_source_is_minmax(shared, cifar_tree, cli, tmp_path):
    out = tmp_path / "int8"
    code, stdout, err = cli("calibrate", "--model", resnet_file(shared, 20), "--calibration", "teacher", "--teacher", "builtin:toy",
                            "--size", "20", "--data", cifar_tree, "--eval-size", "50", "--no-throughput", "--out", out)
    assert code == 0, err
    protocol = json.loads((out / "calibration.json").read_text())["protocol"]
    assert protocol["activation_ranges"] == "minmax" and protocol["activation_ranges_chosen_by"] == "auto"
    assert "activation ranges minmax (auto" in stdout

def test_calibrate_real_gives_int8_ir_close_to_fp32(shared, lossless, cifar_tree, cli, tmp_path):
    out = tmp_path / "int8"
    code, stdout, err = cli("calibrate", "--model", resnet_file(shared, 20), "--calibration", "real", "--size", "50",
                            "--data", cifar_tree, "--no-throughput", "--activation-ranges", "minmax", "--out", out)
    assert code == 0, err
    report = json.loads((out / "calibration.json").read_text())
    results = report["results"]
    assert results["eval_images"] == 400 and results["fp32_accuracy"] > 85
    assert abs(results["drop_points"]) <= 3.0, results
    assert report["protocol"]["calibration"]["source"] == "real" and report["protocol"]["calibration"]["size"] == 50
    assert report["protocol"]["activation_ranges"] == "minmax"
    assert report["protocol"]["activation_ranges_chosen_by"] == "--activation-ranges"
    assert (out / "model_int8.bin").stat().st_size > 0 and (out / "calibration_images.png").exists()
    xml = (out / "model_int8.xml").read_text()
    assert xml.count('type="FakeQuantize"') >= 19  # every conv input quantized: it really is INT8
    import openvino as ov

    from distilgan.calibration.ptq import compile_model

    compiled = compile_model(ov.Core().read_model(str(out / "model_int8.xml")))  # f32 hint, as calibrate
    model = load_classifier(resnet_file(shared, 20))
    images, labels = lossless["test"]
    int8_predictions = np.argmax(compiled(model.preprocess(images[:400]))[0], 1)
    assert abs((int8_predictions == labels[:400]).mean() * 100 - results["int8_accuracy"]) < 1e-6  # the saved IR
    assert "INT8 top-1" in stdout


def test_activation_ranges_minmax_widens_activation_quantizers():
    """--activation-ranges minmax takes the max over images (NNCF's default: the mean of per-image
    maxima), so every activation quantizer's range contains the default's; weights are unaffected."""
    pytest.importorskip("nncf")
    from distilgan.calibration import ptq
    from distilgan.errors import UserError

    torch.manual_seed(0)
    model = ptq.to_openvino(build_classifier("resnet20").eval())
    inputs = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32) * np.linspace(0.2, 2, 6)[:, None, None, None].astype(np.float32)

    def ranges(activation_ranges: str) -> dict[str, tuple[float, float]]:
        quantized = ptq.quietly(ptq.quantize, model, inputs, activation_ranges=activation_ranges)
        found = {}
        for op in quantized.get_ordered_ops():
            if op.get_type_name() == "FakeQuantize" and "weights" not in op.get_friendly_name():
                low = op.input_value(1).get_node().get_data().min()
                high = op.input_value(2).get_node().get_data().max()
                found[op.get_friendly_name()] = (float(low), float(high))
        return found

    default, widest = ranges("mean-minmax"), ranges("minmax")
    assert default.keys() == widest.keys() and len(default) >= 19
    assert all(widest[k][1] >= default[k][1] - 1e-6 and widest[k][0] <= default[k][0] + 1e-6 for k in default)
    assert sum(widest[k][1] > default[k][1] * 1.05 for k in default) >= len(default) // 2  # really different
    with pytest.raises(UserError, match="unknown activation range estimator 'max'"):
        ptq.quantize(model, inputs, activation_ranges="max")


def test_calibrate_bad_inputs_are_one_line_errors(shared, cifar_tree, cli, tmp_path):
    model = resnet_file(shared, 20)
    cases = {}
    cases["unknown model"] = ("--model", "resnet99", "--data", cifar_tree)
    cases["untrained zoo name"] = ("--model", "resnet20", "--data", cifar_tree)
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = ("--model", model, "--data", cifar_tree, "--calibration", tmp_path / "empty")
    small = write_tree(tmp_path / "small", {"train": (np.zeros((3, 16, 16, 3), np.uint8), np.zeros(3, np.int64))})
    cases["size mismatch"] = ("--model", model, "--data", cifar_tree, "--calibration", small / "train")
    cases["unknown source"] = ("--model", model, "--data", cifar_tree, "--calibration", "gaussian")
    cases["student missing"] = ("--model", model, "--data", cifar_tree, "--calibration", "student")
    for what, args in cases.items():
        code, _, err = cli("calibrate", *args, "--no-throughput", "--out", tmp_path / "never")
        assert code == 2, what
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("distilgan: error:"), (what, err)
    assert not (tmp_path / "never").exists()


# --- train-classifier -------------------------------------------------------------------------------

def test_augment_is_a_crop_or_flipped_crop():
    from distilgan.calibration.train import augment

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    out = augment(images, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2), (2, 2, 2, 2)).permute(0, 2, 3, 1)
    for i in range(len(images)):
        candidates = [padded[i, y : y + 8, x : x + 8] for y in range(5) for x in range(5)]
        candidates += [c.flip(1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_train_classifier_one_tiny_epoch_and_resume(tmp_path, cli):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 10
    data = write_tree(tmp_path / "data", {"train": (images, labels), "test": (images[:20], labels[:20])})
    run = tmp_path / "run"
    args = ("train-classifier", "--model", "resnet20", "--data", data, "--out", run, "--batch-size", "16", "--train-size", "30")
    code, stdout, err = cli(*args, "--epochs", "1")
    assert code == 0, err
    assert "test accuracy" in stdout
    history = json.loads((run / "history.json").read_text())["history"]
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert load_classifier(run).config["depth"] == 20
    code, _, err = cli(*args, "--epochs", "1")
    assert code == 2 and "--resume" in err  # refuses to overwrite a run
    code, _, err = cli(*args, "--epochs", "2", "--resume")
    assert code == 0, err
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())["history"]] == [1, 2]
    code, _, err = cli("train-classifier", "--model", "resnet7", "--data", data, "--out", tmp_path / "x", "--epochs", "1")
    assert code == 2 and "unknown classifier" in err
