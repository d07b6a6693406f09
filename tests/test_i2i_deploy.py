"""Deploying image translators (issue 18): export + parity, INT8 calibrated on a pair set, `translate` through
the export, `bench`, and the `info` / MACs fixes for the i2i models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilgan.deploy import EXPORT_JSON
from distilgan.models import LatentEncoder, PatchDiscriminator, UNetTranslator, load_pretrained
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc, nhwc_to_nchw, save_png, uint8_to_float

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")

EDITS = ["cat:dog", "automobile:truck"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from distilgan.store.pairs import parse_edits, write_pairs
    from distilgan.teachers import load_teacher

    teacher = load_teacher("builtin:toy")
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    write_pairs(teacher, out, parse_edits(EDITS, teacher.class_names, 10), per_edit=16, filter_model=None, progress=False)
    return out


@pytest.fixture(scope="module")
def translator(pairs, tmp_path_factory) -> Path:
    """A two-edit translator with batch-norm statistics of the pair sources (not the 0/1 defaults)."""
    from distilgan.store.pairs import PairStore

    store = PairStore.open(pairs)
    arrays = store.load_all()
    torch.manual_seed(0)
    model = UNetTranslator(resolution=32, ngf=4, num_edits=2, edits=store.edits, class_names=store.class_names)
    model.train()
    with torch.no_grad():  # BN running statistics of real inputs
        model(torch.from_numpy(nhwc_to_nchw(uint8_to_float(arrays["sources"]))), torch.from_numpy(arrays["edits"]))
    return model.eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "generator")


@pytest.fixture(scope="module")
def exports(translator, pairs, tmp_path_factory) -> dict[str, Path]:
    from distilgan.deploy.export import export_checkpoint

    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for fmt, precision, options in (("onnx", "fp32", {}), ("openvino", "fp32", {}),
                                    ("onnx", "int8", {"calib_data": pairs}),
                                    ("openvino", "int8", {"calib_data": pairs, "calibration_size": 24})):
        made[f"{fmt}-{precision}"] = root / f"{fmt}-{precision}"
        export_checkpoint(translator, made[f"{fmt}-{precision}"], fmt=fmt, precision=precision, **options)
    return made


def torch_outputs(checkpoint: Path, images: np.ndarray, edits: np.ndarray) -> np.ndarray:
    """uint8 NHWC in -> float NCHW out of the PyTorch model."""
    with torch.inference_mode():
        return load_pretrained(checkpoint)(torch.from_numpy(nhwc_to_nchw(uint8_to_float(images))),
                                           torch.from_numpy(edits)).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from distilgan.deploy.bench import pixel_quality

    return pixel_quality(nchw_to_nhwc(float_to_uint8(a)), nchw_to_nhwc(float_to_uint8(b)))["psnr_db"]


def sources(pairs: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    from distilgan.store.pairs import PairStore

    arrays = PairStore.open(pairs).load_all()
    return arrays["sources"][:n], arrays["edits"][:n]


def test_export_records_the_translator_and_its_parity(exports):
    import onnx

    info = json.loads((exports["onnx-fp32"] / EXPORT_JSON).read_text())
    assert info["kind"] == "translator" and info["architecture"] == "UNetTranslator"
    assert info["edit_names"] == EDITS and info["num_edits"] == 2 and info["resolution"] == 32
    assert set(info["inputs"]) == {"images", "edits"} and set(info["outputs"]) == {"translated"}
    assert info["macs_per_image"] > 0 and info["params"] > 0 and len(info["source"]["fingerprint"]) == 64
    parity = info["parity"]
    assert parity["samples"] == 64 and "synthetic" in parity["inputs"]
    assert parity["max_abs_error"] < 1e-4 and parity["uint8_max_diff"] <= 1 and parity["psnr_db"] > 60
    graph = onnx.load(str(exports["onnx-fp32"] / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["images", "edits"] and [o.name for o in graph.output] == ["translated"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    ov = json.loads((exports["openvino-fp32"] / EXPORT_JSON).read_text())["parity"]
    assert ov["max_abs_error"] < 1e-3 and ov["psnr_db"] > 60


def test_int8_calibrated_on_pair_sources(exports, translator, pairs):
    import onnx

    from distilgan.deploy.runtime import EdgeTranslator

    ort = json.loads((exports["onnx-int8"] / EXPORT_JSON).read_text())
    calibration = ort["quantization"]["calibration"]
    assert "sources of pair set" in calibration["images"] and calibration["samples"] == 32  # all 32 pairs
    assert "fewer than --calibration-size 512" in calibration["note"]
    ops = {node.op_type for node in onnx.load(str(exports["onnx-int8"] / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ov = json.loads((exports["openvino-int8"] / EXPORT_JSON).read_text())
    assert ov["quantization"]["calibration"]["samples"] == 24 and "note" not in ov["quantization"]["calibration"]
    assert "sources of pair set" in ov["parity"]["inputs"]
    images, edits = sources(pairs, 32)
    expected = torch_outputs(translator, images, edits)
    for name in ("onnx-int8", "openvino-int8"):
        got = EdgeTranslator(exports[name]).run(nhwc_to_nchw(uint8_to_float(images)), edits)
        # quantised: close but not equal; a tiny random translator's outputs are low-contrast, so the
        # PSNR is high (measured ~50-60 dB); below 30 dB the quantisation would be broken
        assert 30 < psnr(got, expected) < float("inf"), name
        assert json.loads((exports[name] / EXPORT_JSON).read_text())["parity"]["psnr_db"] > 30


def test_translate_through_the_export_matches_torch(cli, exports, translator, pairs, tmp_path):
    images, _ = sources(pairs, 6)
    for i, image in enumerate(images):
        save_png(image, tmp_path / "in" / f"{i}.png")
    lone = tmp_path / "lone.onnx"  # a model file without its folder: the facts come from its metadata
    shutil.copy(exports["onnx-fp32"] / "model.onnx", lone)
    outputs = {}
    for name, checkpoint in (("torch", translator), ("openvino", exports["openvino-fp32"]),
                             ("onnx-file", exports["onnx-fp32"] / "model.onnx"), ("lone", lone),
                             ("int8", exports["openvino-int8"] / "model.xml")):
        code, out, err = cli("translate", "--checkpoint", checkpoint, "--in", tmp_path / "in", "--out",
                             tmp_path / name, "--edit", "truck")
        assert code == 0, err
        assert "translated 6 images (edit automobile:truck)" in out and "s per image" in out
        outputs[name] = np.stack([np.asarray(Image.open(tmp_path / name / f"{i}.png")) for i in range(6)]).astype(int)
    for name in ("openvino", "onnx-file", "lone"):
        assert np.abs(outputs[name] - outputs["torch"]).max() <= 1, name  # parity tolerance: one uint8 step
    assert 0 < np.abs(outputs["int8"] - outputs["torch"]).mean() < 4
    for args, needle in (
        (("--device", "cuda"), "--device chooses a torch device"),
        (("--edit", "bird"), "--edit: unknown edit 'bird'"),
        ((), "--edit is required: this translator does 2 edits"),
    ):
        code, _, err = cli("translate", "--checkpoint", exports["onnx-fp32"], "--in", tmp_path / "in", "--out",
                           tmp_path / "bad", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("translate", "--checkpoint", translator, "--in", tmp_path / "in", "--out", tmp_path / "bad",
                       "--edit", "0", "--threads", "2")
    assert code == 2 and "--threads sets the threads of an exported model" in err


def test_one_edit_translator_exports_images_only(tmp_path):
    from distilgan.deploy.export import export_model
    from distilgan.deploy.runtime import EdgeGenerator, EdgeTranslator

    torch.manual_seed(1)
    model = UNetTranslator(resolution=16, ngf=4, separable=True, norm="instance").eval()
    info = export_model(model, tmp_path / "one", fmt="onnx")
    assert list(info["inputs"]) == ["images"] and info["parity"]["max_abs_error"] < 1e-4
    batch = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    runtime = EdgeTranslator(tmp_path / "one")
    assert runtime.graph_inputs == ["images"]
    with torch.inference_mode():
        expected = nchw_to_nhwc(float_to_uint8(model(torch.from_numpy(nhwc_to_nchw(uint8_to_float(batch)))).numpy()))
    assert np.abs(runtime.translate_uint8(batch).astype(int) - expected).max() <= 1
    from distilgan.errors import UserError

    with pytest.raises(UserError, match="not a generator"):
        EdgeGenerator(tmp_path / "one")


NO_TORCH_SCRIPT = """
import sys
sys.modules["torch"] = None  # a None entry makes every `import torch` (and torch.x) raise ImportError
import numpy as np
from distilgan.deploy.runtime import open_export
t = open_export(sys.argv[2])
np.save(sys.argv[1], t.translate_uint8(np.load(sys.argv[3]), "cat->dog"))
assert sys.modules["torch"] is None and not any(m.startswith("torch.") for m in sys.modules), "torch was imported"
"""


def test_translator_runtime_needs_no_torch(exports, translator, pairs, tmp_path):
    images, _ = sources(pairs, 4)
    np.save(tmp_path / "in.npy", images)
    done = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, str(tmp_path / "out.npy"), str(exports["onnx-fp32"]),
                           str(tmp_path / "in.npy")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = nchw_to_nhwc(float_to_uint8(torch_outputs(translator, images, np.zeros(4, np.int64))))  # cat:dog = 0
    assert np.abs(np.load(tmp_path / "out.npy").astype(int) - expected).max() <= 1


def test_export_refuses_what_it_cannot_do_in_one_line(cli, translator, pairs, tmp_path):
    from distilgan.models import DiStyleGANGenerator

    generator = DiStyleGANGenerator(z_dim=8, num_classes=3, ngf=16, project_dim=8).save_pretrained(tmp_path / "g")
    encoder = LatentEncoder(z_dim=8, num_classes=3, ndf=4).save_pretrained(tmp_path / "e")
    for args, needle in (
        (("--checkpoint", translator, "--precision", "int8"), "needs --calib-data PAIRS"),
        (("--checkpoint", generator, "--precision", "int8", "--calib-data", pairs), "a generator is calibrated on its own z"),
        (("--checkpoint", translator, "--calib-data", pairs), "--calib-data applies to --precision int8 only"),
        (("--checkpoint", encoder), "holds a LatentEncoder, which cannot be exported"),
        (("--checkpoint", translator, "--precision", "int8", "--calib-data", tmp_path / "none"), "pair set not found"),
    ):
        code, _, err = cli("export", *args, "--out", tmp_path / "x")
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "x").exists()


def test_calibration_pairs_map_edits_by_name(pairs):
    from distilgan.deploy.translator_inputs import edit_mapping, pair_inputs, synthetic_inputs
    from distilgan.errors import UserError

    facts = {"resolution": 32, "channels": 3, "num_edits": 2, "edit_names": ["automobile:truck", "cat:dog"]}
    inputs, available = pair_inputs(pairs, facts, 10, seed=0, stream=1)
    assert available == 32 and len(inputs) == 10 and inputs.images.dtype == np.uint8
    images, edits = sources(pairs, 32)
    for image, edit in zip(inputs.images, inputs.edits):  # the pair's own edit, renumbered for the translator
        row = next(i for i in range(32) if np.array_equal(images[i], image))
        assert edit == 1 - edits[row]
    assert edit_mapping(["cat:dog"], {"num_edits": 1, "edit_names": ["0"]}, "x").tolist() == [0]  # unnamed: by position
    with pytest.raises(UserError, match="has edits bird:cat; the translator does"):
        edit_mapping(["bird:cat"], facts, "x")
    with pytest.raises(UserError, match="holds 32x32x3 images; the translator takes 16x16x3"):
        pair_inputs(pairs, {**facts, "resolution": 16}, 4, 0, 1)
    synthetic = synthetic_inputs(facts, 6, seed=3)
    assert synthetic.images.shape == (6, 32, 32, 3) and synthetic.edits.tolist() == [0, 1] * 3
    assert np.array_equal(synthetic.images, synthetic_inputs(facts, 6, seed=3).images)
    assert [f["images"].shape for f in inputs.feeds(4, with_edits=False)] == [(4, 3, 32, 32)] * 2  # whole batches


def test_bench_measures_a_translator(cli, translator, pairs, tmp_path):
    out_json = tmp_path / "bench.json"
    code, out, err = cli("bench", "--checkpoint", translator, "--backends", "torch,onnxruntime", "--precisions",
                         "fp32,int8", "--batch", "1,4", "--threads", "1", "--fid-samples", "0", "--quality-samples", "16",
                         "--repeats", "2", "--min-seconds", "0", "--no-peak", "--calib-data", pairs, "--json", out_json)
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out_json.read_text())["variants"]}
    assert set(rows) == {"torch fp32 (eager)", "onnxruntime fp32", "onnxruntime int8"}
    assert rows["torch fp32 (eager)"]["quality"]["psnr_db"] == float("inf")
    assert rows["onnxruntime fp32"]["quality"]["psnr_db"] > 60 and rows["onnxruntime fp32"]["quality"]["samples"] == 16
    assert 30 < rows["onnxruntime int8"]["quality"]["psnr_db"] < float("inf")
    for row in rows.values():
        assert row["timing"]["1"]["median_ms"] > 0 and row["timing"]["4"]["images_per_s"] > 0
        assert row["timing"]["4"]["cpu_s_per_image"] > 0 and row["macs_per_image"] > 0 and row["size_bytes"] > 0
    assert "| onnxruntime int8 |" in out
    code, _, err = cli("bench", "--checkpoint", translator, "--backends", "onnxruntime", "--precisions", "int8",
                       "--no-peak", "--fid-samples", "0")
    assert code == 2 and "needs --calib-data PAIRS" in err and len(err.strip().splitlines()) == 1


def test_info_prints_translators_encoders_and_critics(cli, translator, tmp_path):
    code, out, err = cli("info", translator)
    assert code == 0, err
    params = sum(p.numel() for p in load_pretrained(translator).parameters())
    assert "UNetTranslator" in out and f"{params:,}" in out and "edits:          2 (cat:dog, automobile:truck)" in out
    assert "MACs per image:" in out and "32x32" in out
    facts = json.loads(cli("info", translator, "--json")[1])
    assert facts["num_edits"] == 2 and facts["num_classes"] is None and facts["macs_per_image"] > 0
    LatentEncoder(z_dim=8, num_classes=3, ndf=4, class_names=["a", "b", "c"],
                  z_distribution={"kind": "truncated", "threshold": 1.0}).save_pretrained(tmp_path / "enc")
    code, out, err = cli("info", tmp_path / "enc")
    assert code == 0, err
    assert "z_dim:          8, z truncated" in out and "classes:        3 (a, b, c)" in out
    PatchDiscriminator(resolution=16, ndf=4, num_edits=3).save_pretrained(tmp_path / "d")
    code, out, err = cli("info", tmp_path / "d")
    assert code == 0 and "edits:          3" in out, err


def test_macs_of_the_i2i_models():
    from distilgan.models.macs import count_macs

    critic = PatchDiscriminator(resolution=16, ndf=4, num_edits=2)
    images = torch.zeros(1, 3, 16, 16)
    assert count_macs(critic).macs_per_image == count_macs(critic, images, images, torch.zeros(1, dtype=torch.long)).macs_per_image > 0
    assert count_macs(PatchDiscriminator()).macs_per_image == 35_799_040  # docs/i2i.md: 35.8 M per pair
    encoder = LatentEncoder(z_dim=8, num_classes=3, ndf=4)
    explicit = count_macs(encoder, torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    assert count_macs(encoder).macs_per_image == explicit.macs_per_image > 0


def test_image_translator_is_a_lazy_export():
    import distilgan
    from distilgan.pipeline import ImageTranslator

    assert distilgan.ImageTranslator is ImageTranslator and "ImageTranslator" in distilgan.__all__
