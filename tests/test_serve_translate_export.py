"""Exported translators (distilgan export) served by `distilgan serve --translator EXPORT`: the same API as a
torch checkpoint, run by onnxruntime / openvino (and without torch)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilgan.pipeline import fit_pil

from test_serve_translate import (  # noqa: F401  (helpers, and fixtures by name)
    B64, EDITS, GOOD, TRUNCATED, _form, _json, decode, expected, folders, make_client, noise, png, upload,
)


# --- exported translators (distilgan export): the same API, run by onnxruntime / openvino -----------------


@pytest.fixture(scope="module")
def export_of(folders, tmp_path_factory):
    """The two-edit translator exported once per format by the export command (skipped without its runtime)."""
    from distilgan.cli import main

    made: dict[str, Path] = {}

    def export(fmt: str) -> Path:
        for package in ("onnx", "openvino" if fmt == "openvino" else "onnxruntime"):
            pytest.importorskip(package, reason=f"an {fmt} export needs {package}")
        if fmt not in made:
            out = tmp_path_factory.mktemp("export") / fmt
            assert main(["export", "--checkpoint", str(folders[0]), "--format", fmt, "--out", str(out)]) == 0
            made[fmt] = out
        return made[fmt]

    return export


@pytest.fixture(scope="module", params=["onnx-folder", "lone-onnx", "openvino-xml"])
def exported(request, export_of) -> tuple[Path, str]:
    """(what --translator is given, its backend): the ONNX folder, a lone .onnx (its facts in its metadata),
    or the OpenVINO .xml (its JSON beside it)."""
    if request.param == "openvino-xml":
        return export_of("openvino") / "model.xml", "openvino"
    folder = export_of("onnx")
    if request.param == "onnx-folder":
        return folder, "onnxruntime"
    lone = folder.parent / "lone" / "car2truck.onnx"
    lone.parent.mkdir(exist_ok=True)
    lone.write_bytes((folder / "model.onnx").read_bytes())
    return lone, "onnxruntime"


def test_an_exported_translator_answers_with_the_runtimes_pixels(exported, expected):
    from distilgan.deploy.runtime import EdgeTranslator
    from distilgan.models.macs import count_macs

    path, backend = exported
    edge = EdgeTranslator(path)
    with make_client(None, [f"car2truck={path}"]) as served:
        listing = served.get("/translators").json()["translators"][0]
        assert (listing["name"], listing["backend"], listing["precision"], listing["device"]) == ("car2truck", backend, "fp32", "cpu")
        assert [e["name"] for e in listing["edits"]] == EDITS and (listing["resolution"], listing["channels"]) == (16, 3)
        lone = path.suffix == ".onnx"  # its metadata has what the runtime needs, not the size
        assert listing["parameters"] == (None if lone else count_macs(expected.model).params)
        assert listing["architecture"] == ("exported translator" if lone else "UNetTranslator")
        assert served.get("/health").json()["backend"] == backend and ("parity" in listing["export"]) is not lone
        picture = noise(30, 40, seed=9)
        answer = upload(served, png(picture), edit="automobile:truck")
        assert answer.status_code == 200 and answer.headers["x-edit-index"] == "1" and answer.headers["x-resized"] == "true"
        model_input = fit_pil(Image.fromarray(picture), 16, 3, resize=True)
        got = decode(answer.content)
        np.testing.assert_array_equal(got, edge.translate_uint8(model_input[None], "automobile:truck")[0])
        torch_pixels = expected.translate(model_input[None], edit=1, output="np")[0]
        assert np.abs(got.astype(int) - torch_pixels).max() <= 1  # the export's parity
        body = {"image_base64": base64.b64encode(png(model_input)).decode(), "edit": "cat", "format": "json"}
        facts = served.post("/translate", json=body).json()
        assert (facts["edit"], facts["edit_index"]) == ("cat:dog", 0)
        np.testing.assert_array_equal(decode(base64.b64decode(facts["image_png_base64"])), edge.translate_uint8(model_input[None], 0)[0])


SAME_ERRORS = [
    _form(GOOD, edit="zebra"), _form(GOOD, edit="2"), _form(GOOD), _form(GOOD, edit="0", model="nope"),
    _form(GOOD, edit="dog:cat"), _json({"image_base64": B64, "edit": True}), _form(b"text", edit="0"),
    _form(TRUNCATED, edit="0"), _form(png(noise(100, 100, seed=7)), edit="0"),
]


def test_an_exported_translator_gives_the_checkpoints_errors(exported, folders):
    with make_client(None, [str(folders[0])]) as checkpoint, make_client(None, [f"car2truck={exported[0]}"]) as export:
        for request_kwargs in SAME_ERRORS:
            want, got = checkpoint.post("/translate", **request_kwargs), export.post("/translate", **request_kwargs)
            assert (got.status_code, got.json()) == (want.status_code, want.json()) and got.status_code >= 400


NO_TORCH = """
import sys
sys.modules["torch"] = None  # every `import torch` fails
import numpy as np
from fastapi.testclient import TestClient
from distilgan.serve import create_app, load_translators
translators = load_translators(sys.argv[2:])
with TestClient(create_app(None, translators=translators)) as client:
    listed = client.get("/translators").json()["translators"]
    assert [t["backend"] for t in listed] == ["onnxruntime", "openvino"]
    import io
    from PIL import Image
    upload = io.BytesIO()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(upload, "PNG")  # another size: resized on the way in
    reply = client.post("/translate", files={"image": ("x.png", upload.getvalue(), "image/png")},
                        data={"edit": "1", "model": listed[0]["name"]})
    assert reply.status_code == 200, reply.text
np.save(sys.argv[1], np.stack([t.translate(np.full((16, 16, 3), 77, np.uint8), 1) for t in translators]))
assert sys.modules["torch"] is None and not any(m.startswith("torch.") for m in sys.modules), "torch was imported"
"""


def test_exported_translators_load_and_run_without_torch(export_of, tmp_path):
    """Loading, listing, an upload (decoded and resized) and the forward pass need no torch."""
    import subprocess
    import sys

    from distilgan.deploy.runtime import EdgeTranslator

    paths = [export_of("onnx"), export_of("openvino") / "model.xml"]
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "out.npy"), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    image = np.full((1, 16, 16, 3), 77, np.uint8)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), [EdgeTranslator(p).translate_uint8(image, 1)[0] for p in paths])


def test_cli_with_exported_translators(cli, export_of, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from distilgan.serve.app import SETTINGS_ENV, app_from_env
    from distilgan.serve.backend import json_safe, translator_spec

    assert json_safe({"parity": [float("inf"), float("nan"), 1.5]}) == {"parity": ["inf", "nan", 1.5]}  # strict JSON
    folder = export_of("onnx")
    assert translator_spec(str(folder / "model.onnx")) == ("onnx", str(folder / "model.onnx"))  # the folder names it
    (tmp_path / "trucks.onnx").write_bytes(b"")
    assert translator_spec(str(tmp_path / "trucks.onnx"))[0] == "trucks"  # another file: its stem
    info = json.loads((folder / "distilgan-export.json").read_text())
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "distilgan-export.json").write_text(json.dumps({**info, "kind": "generator", "z_dim": 8, "num_classes": 3}))
    (tmp_path / "lone.xml").write_text("<net/>")
    for args, message in (
        (("--checkpoint", folder), f"--checkpoint {folder} holds an exported translator (an image translator, not a generator): serve it with --translator {folder}"),
        (("--model", folder, "--backend", "onnxruntime"), f"serve it with --translator {folder}"),
        (("--translator", folder, "--device", "cuda"), f"--translator {folder} is an export, which runs on the CPU here (drop --device cuda)"),
        (("--translator", tmp_path / "gen"), f"holds an exported generator, not an image translator (serve it with --model {tmp_path / 'gen'} --backend onnxruntime)"),
        (("--checkpoint", tmp_path / "gen"), "is an exported generator, which torch does not run: serve it with --model"),
        (("--translator", tmp_path / "lone.xml"), "has no distilgan-export.json beside it"),
    ):
        code, _, err = cli("serve", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    settings = {"checkpoint": None, "backend": "torch", "device": "cpu", "max_count": 4, "threads": 1, "translators": [f"t={folder}"]}
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(settings))  # --workers N: each process loads the export itself
    with TestClient(app_from_env()) as worker:
        assert worker.get("/translators").json()["translators"][0]["backend"] == "onnxruntime"
        assert worker.post("/translate", files={"image": ("x.png", GOOD, "image/png")}, data={"edit": "0"}).status_code == 200
