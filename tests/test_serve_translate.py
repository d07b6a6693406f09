"""``distilgan serve --translator``: POST /translate and GET /translators in-process (FastAPI TestClient),
their limits and errors, servers with translators only or generators only, the command line, and
the real server in a subprocess."""

from __future__ import annotations

import base64
import io
import json
import signal
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="distilgan serve needs fastapi (pip install fastapi uvicorn httpx)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
pytest.importorskip("python_multipart", reason="uploads need python-multipart (pip install python-multipart)")

import torch
from PIL import Image

from distilgan.models import UNetTranslator
from distilgan.pipeline import ImageTranslator, fit_pil

from test_serve_api import running_server, save_tiny_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
              pytest.mark.usefixtures("one_thread")]

EDITS = ["cat:dog", "automobile:truck"]
MAX_BYTES, MAX_PIXELS = 20_000, 200 * 200  # small, so that the tests' images can cross them


def save_translators(root: Path) -> tuple[Path, Path]:
    """A 16x16 RGB two-edit translator in RUN/generator (served as "car2truck") and an 8x8 grayscale
    one-edit translator."""
    torch.manual_seed(0)
    two = root / "car2truck" / "generator"
    UNetTranslator(resolution=16, ngf=4, num_edits=2, edit_names=EDITS).save_pretrained(two)
    gray = root / "gray"
    UNetTranslator(resolution=8, channels=1, ngf=4, edit_names=["day:night"]).save_pretrained(gray)
    return two, gray


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return save_translators(tmp_path_factory.mktemp("translate"))


@pytest.fixture(scope="module")
def generator_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("translate-gen") / "student")


def make_client(generator: Path | None, translators: list[str]):
    from fastapi.testclient import TestClient

    from distilgan.serve import UploadLimits, create_app, load_backend, load_translators

    backend = load_backend("torch", generator) if generator else None
    app = create_app(backend, max_count=8, translators=load_translators(translators),
                     limits=UploadLimits(max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS))
    return TestClient(app)


@pytest.fixture(scope="module")
def client(folders, generator_checkpoint):
    """A generator and two translators, as `serve --checkpoint G --translator A --translator gray=B`."""
    two, gray = folders
    with make_client(generator_checkpoint, [str(two), f"gray={gray}"]) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def expected(folders) -> ImageTranslator:
    return ImageTranslator.from_pretrained(folders[0])


def upload(client, data: bytes, name: str = "photo.png", **fields: str):
    return client.post("/translate", files={"image": (name, data, "image/png")}, data=fields)


# --- the listing -------------------------------------------------------------------------------------


def test_listing_shows_the_translators_and_their_edits(client, folders):
    from distilgan.models.macs import count_macs

    listing = client.get("/translators").json()
    assert [t["name"] for t in listing["translators"]] == ["car2truck", "gray"]
    two, gray = listing["translators"]
    assert [(e["index"], e["name"]) for e in two["edits"]] == [(0, "cat:dog"), (1, "automobile:truck")]
    assert (two["resolution"], two["channels"], two["num_edits"]) == (16, 3, 2)
    assert (gray["resolution"], gray["channels"], [e["name"] for e in gray["edits"]]) == (8, 1, ["day:night"])
    assert two["architecture"] == "UNetTranslator" and two["device"] == "cpu" and two["backend"] == "torch"
    assert two["parameters"] == count_macs(ImageTranslator.from_pretrained(folders[0]).model).params > 0
    assert two["macs_per_image"] > 0 and two["config"]["edit_names"] == EDITS
    assert (listing["max_upload_bytes"], listing["max_upload_pixels"], listing["formats"]) == (MAX_BYTES, MAX_PIXELS, ["PNG", "JPEG"])
    health = client.get("/health").json()
    assert health["generator"] is True and health["translators"] == ["car2truck", "gray"]


# --- the happy paths: the Python API's pixels --------------------------------------------------------


def test_multipart_upload_is_resized_and_matches_the_python_api(client, expected):
    picture = noise(30, 40)  # 40x30: another size and not square
    before = client.get("/health").json()["translations_served"]
    answer = upload(client, png(picture), edit="automobile:truck", model="car2truck")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["x-model"] == "car2truck" and answer.headers["x-edit"] == "automobile:truck"
    assert answer.headers["x-edit-index"] == "1" and answer.headers["x-resized"] == "true"
    assert answer.headers["x-input-size"] == "40x30" and answer.headers["x-input-mode"] == "RGB"
    assert "resized 40x30 to 16x16" in answer.headers["x-notes"] and "x-converted" not in answer.headers
    assert float(answer.headers["x-translation-ms"]) > 0
    got = decode(answer.content)
    assert got.shape == (16, 16, 3) and got.dtype == np.uint8
    resized = fit_pil(Image.fromarray(picture), 16, 3, resize=True)  # the same resize as the Python API's
    np.testing.assert_array_equal(got, expected.translate(resized[None], edit="automobile:truck", output="np")[0])
    np.testing.assert_array_equal(got, expected.translate(Image.fromarray(picture), edit=1, output="np", resize=True)[0])
    assert client.get("/health").json()["translations_served"] == before + 1


@pytest.mark.parametrize("data_url", [False, True], ids=["base64", "data-url"])
def test_base64_json_matches_the_python_api(client, expected, data_url):
    picture = noise(16, 16, seed=1)  # the model's size: no resize
    encoded = base64.b64encode(png(picture)).decode()
    body = {"image_base64": f"data:image/png;base64,{encoded}" if data_url else encoded,
            "edit": 0, "model": "car2truck", "format": "json"}
    answer = client.post("/translate", json=body)
    assert answer.status_code == 200, answer.text
    facts = answer.json()
    assert (facts["model"], facts["edit"], facts["edit_index"]) == ("car2truck", "cat:dog", 0)
    assert (facts["width"], facts["height"], facts["input_width"], facts["input_height"]) == (16, 16, 16, 16)
    assert facts["resized"] is False and facts["converted"] is None and facts["notes"] == []
    assert facts["input_format"] == "PNG" and facts["translation_ms"] > 0
    np.testing.assert_array_equal(decode(base64.b64decode(facts["input_png_base64"])), picture)
    got = decode(base64.b64decode(facts["image_png_base64"]))
    np.testing.assert_array_equal(got, expected.translate(picture[None], edit=0, output="np")[0])
    other = client.post("/translate", json={**body, "edit": "automobile:truck"}).json()
    assert not np.array_equal(decode(base64.b64decode(other["image_png_base64"])), got)  # the edit matters
    png_answer = client.post("/translate", json={**body, "format": "png"})  # the same pixels as a PNG
    np.testing.assert_array_equal(decode(png_answer.content), got)


def test_rgba_grayscale_and_jpeg_are_converted(client, expected, folders):
    rgba = noise(16, 16, 4, seed=2)
    answer = client.post("/translate", json={"image_base64": base64.b64encode(png(rgba)).decode(),
                                             "edit": "cat:dog", "model": "car2truck", "format": "json"})
    facts = answer.json()
    assert answer.status_code == 200 and facts["input_mode"] == "RGBA" and facts["converted"] == "RGBA->RGB"
    assert any("alpha dropped" in note for note in facts["notes"])
    np.testing.assert_array_equal(decode(base64.b64decode(facts["image_png_base64"])),
                                  expected.translate(Image.fromarray(rgba), edit=0, output="np")[0])

    gray_picture = noise(16, 16, 1, seed=3)
    answer = upload(client, png(gray_picture), edit="1", model="car2truck")  # digits: an edit index
    assert answer.status_code == 200 and answer.headers["x-converted"] == "L->RGB"
    np.testing.assert_array_equal(decode(answer.content),
                                  expected.translate(Image.fromarray(gray_picture), edit=1, output="np")[0])

    buffer = io.BytesIO()
    Image.fromarray(noise(20, 20, seed=4)).save(buffer, format="JPEG", quality=90)
    answer = upload(client, buffer.getvalue(), "photo.jpg", model="gray")  # one edit: no edit needed
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-edit"] == "day:night" and answer.headers["x-converted"] == "RGB->L"
    result = decode(answer.content)
    assert result.shape == (8, 8)  # the grayscale model answers a grayscale PNG
    gray_model = ImageTranslator.from_pretrained(folders[1])
    jpeg = Image.open(io.BytesIO(buffer.getvalue()))
    np.testing.assert_array_equal(result, gray_model.translate(jpeg, output="np", resize=True)[0, ..., 0])


# --- bad input: 4xx with a one-line {"error": ...}, and the server keeps answering -------------------

GOOD = png(noise(16, 16, seed=5))
TRUNCATED = png(noise(64, 64, seed=6))[:-600]


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise(8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def _json(body: object) -> dict:
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def _form(data: bytes, **fields: str) -> dict:
    return {"files": {"image": ("x.png", data, "image/png")}, "data": fields}


B64 = base64.b64encode(GOOD).decode()
BAD = [
    ("not an image", _form(b"hello, I am text", edit="0", model="gray"), 415, "not a PNG or JPEG image"),
    ("gif", _form(_gif(), model="gray"), 415, "send a .png or .jpg file"),
    ("truncated png", _form(TRUNCATED, model="gray"), 422, "truncated"),
    ("empty file", _form(b"", model="gray"), 422, "the image is empty"),
    ("too many bytes", _form(png(noise(100, 100, seed=7)), model="gray"), 413, f"at most {MAX_BYTES} (send a smaller file, or start the server with a larger --max-upload-bytes)"),
    ("too many pixels", _form(png(np.zeros((300, 300, 3), np.uint8)), model="gray"), 413, f"300x300 = 90000 pixels; this server takes at most {MAX_PIXELS} pixels"),
    ("unknown edit", _form(GOOD, edit="zebra", model="car2truck"), 422, "unknown edit 'zebra' (this translator's edits: cat:dog, automobile:truck)"),
    ("edit index out of range", _form(GOOD, edit="2", model="car2truck"), 422, "edit index 2 is outside 0..1"),
    ("missing edit", _form(GOOD, model="car2truck"), 422, "edit is missing: translator 'car2truck' does 2 edits (cat:dog, automobile:truck)"),
    ("unknown model", _form(GOOD, edit="0", model="nope"), 422, "unknown model 'nope' (this server's translators: car2truck, gray"),
    ("missing model", _form(GOOD, edit="0"), 422, "model is missing: this server has 2 translators (car2truck, gray)"),
    ("unknown form field", _form(GOOD, model="gray", colour="red"), 422, "unknown field 'colour' (allowed: image, edit, model, format)"),
    ("bad format", _form(GOOD, model="gray", format="gif"), 422, "format: must be 'png' or 'json'"),
    ("no image part", {"files": {"other": ("x.png", GOOD, "image/png")}, "data": {"model": "gray"}}, 422, "unknown field 'other'"),
    ("image as text", {"files": {"edit": (None, "0")}, "data": {"image": "abc", "model": "gray"}}, 422, "image was sent as a text field"),
    ("json bad base64", _json({"image_base64": "@@@@", "model": "gray"}), 422, "image_base64 is not valid base64"),
    ("json no image", _json({"model": "gray"}), 422, "image_base64 is missing"),
    ("json edit bool", _json({"image_base64": B64, "model": "gray", "edit": True}), 422, "edit: must be an edit index (integer) or an edit name"),
    ("json unknown field", _json({"image_base64": B64, "model": "gray", "size": 4}), 422, "unknown field 'size' (allowed: image_base64, edit, model, format)"),
    ("json not an image", _json({"image_base64": base64.b64encode(b"text").decode(), "model": "gray"}), 415, "not a PNG or JPEG"),
    ("malformed json", {"content": b"{nope", "headers": {"Content-Type": "application/json"}}, 400, "malformed JSON body"),
    ("empty json", {"content": b"", "headers": {"Content-Type": "application/json"}}, 422, "request body is missing"),
    ("wrong content type", {"content": GOOD, "headers": {"Content-Type": "image/png"}}, 415, "multipart/form-data (a file part 'image') or as JSON"),
]


@pytest.mark.parametrize("request_kwargs,status,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_a_one_line_4xx(client, request_kwargs, status, message):
    answer = client.post("/translate", **request_kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error, error
    assert upload(client, GOOD, edit="0", model="car2truck").status_code == 200  # still serving


def test_oversize_bodies_are_refused_before_they_are_parsed(client):
    huge = png(noise(200, 200, seed=8)) * 2  # ~240 KB: over the body limit the upload limit implies
    answer = upload(client, huge, model="gray")
    assert answer.status_code == 413 and "--max-upload-bytes" in answer.json()["error"]

    def chunks():  # no Content-Length: the limit holds for streamed bodies too
        for _ in range(40):
            yield b"x" * 4096

    answer = client.post("/translate", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "--max-upload-bytes" in answer.json()["error"]
    big = b'{"labels": [' + b"0, " * 30000 + b"0]}"  # /generate keeps its own 64 KiB limit
    answer = client.post("/generate", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "64 KiB" in answer.json()["error"]
    assert upload(client, GOOD, model="gray").status_code == 200


def test_a_server_bug_is_500_without_its_text(folders, monkeypatch):
    from fastapi.testclient import TestClient

    from distilgan.serve import create_app, load_translators, translate

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret /home/someone/path")

    monkeypatch.setattr(translate, "decode_upload", explode)
    app = create_app(None, translators=load_translators([str(folders[1])]))
    with TestClient(app, raise_server_exceptions=False) as broken:
        answer = broken.post("/translate", files={"image": ("x.png", GOOD, "image/png")})
    assert answer.status_code == 500 and "secret" not in answer.text and "RuntimeError" not in answer.text
    assert "incident" in answer.json()["error"]


# --- which endpoints a server has -----------------------------------------------------------------------


def test_a_translator_only_server(folders):
    with make_client(None, [str(folders[1])]) as only:
        health = only.get("/health").json()
        assert health["generator"] is False and health["translators"] == ["gray"]
        answer = only.post("/translate", files={"image": ("x.png", GOOD, "image/png")})  # no model, no edit
        assert answer.status_code == 200 and decode(answer.content).shape == (8, 8)
        for path in ("/generate", "/model"):
            missing = only.post(path) if path == "/generate" else only.get(path)
            error = missing.json()["error"]
            assert missing.status_code == 404 and "POST /translate" in error and "POST /generate" not in error
        assert only.get("/").status_code == 200


def test_a_generator_only_server_lists_no_translators(generator_checkpoint):
    with make_client(generator_checkpoint, []) as only:
        assert only.get("/translators").json()["translators"] == []
        assert only.get("/health").json()["translators"] == []
        answer = only.post("/translate", files={"image": ("x.png", GOOD, "image/png")})
        assert answer.status_code == 404 and "POST /generate" in answer.json()["error"]


def test_nothing_to_serve_is_one_line():
    from distilgan.errors import UserError
    from distilgan.serve import create_app

    with pytest.raises(UserError, match="nothing to serve"):
        create_app(None)


# --- schema, docs and page -------------------------------------------------------------------------------


def test_openapi_docs_and_page(client):
    schema = client.get("/openapi.json").json()
    assert {"/translate", "/translators", "/generate"} <= set(schema["paths"])
    body = schema["paths"]["/translate"]["post"]["requestBody"]["content"]
    assert set(body["multipart/form-data"]["schema"]["properties"]) == {"image", "edit", "model", "format"}
    assert set(body["application/json"]["schema"]["properties"]) == {"image_base64", "edit", "model", "format"}
    responses = schema["paths"]["/translate"]["post"]["responses"]
    assert "image/png" in responses["200"]["content"] and {"413", "415", "422"} <= set(responses)
    docs = client.get("/docs").text
    assert "POST /translate" in docs and "multipart/form-data" in docs and "image_base64" in docs
    assert "GET /translators" in docs and "-F image=@" in docs

    page = client.get("/").text
    assert 'id="tab-translate"' in page and 'id="translate-file"' in page and 'src="/static/translate.js"' in page
    script = client.get("/static/translate.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert 'fetchJson("/translate"' in script.text and 'fetchJson("/translators")' in script.text


# --- the command line and the real server -----------------------------------------------------------------


def test_translator_names(folders, tmp_path):
    from distilgan.serve.backend import translator_spec

    two, gray = folders
    assert translator_spec(str(two)) == ("car2truck", str(two))  # RUN/generator: the run's name
    assert translator_spec(f"trucks={gray}") == ("trucks", str(gray))
    assert translator_spec(str(gray)) == ("gray", str(gray))


def test_cli_errors_are_one_line(cli, folders, generator_checkpoint):
    two, gray = folders
    for args, message in (
        ((), "nothing to serve"),
        (("--checkpoint", two), f"holds a UNetTranslator (an image translator, not a generator): serve it with --translator {two}"),
        (("--translator", generator_checkpoint), "is not an image translator"),
        (("--translator", f"a={two}", "--translator", f"a={gray}"), "two --translator models are named 'a'"),
        (("--translator", f"bad name={two}"), "cannot name a model"),
        (("--translator", "nowhere/generator"), "checkpoint not found"),
        (("--translator", two, "--max-upload-bytes", "0"), "--max-upload-bytes"),
    ):
        code, _, err = cli("serve", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_worker_processes_load_the_translators_from_their_settings(folders, monkeypatch):
    """`--workers N` hands every model and limit to its processes through the environment."""
    from fastapi.testclient import TestClient

    from distilgan.serve.app import SETTINGS_ENV, app_from_env

    settings = {"checkpoint": None, "backend": "torch", "device": "cpu", "max_count": 4, "threads": 1,
                "translators": [f"t={folders[1]}"], "upload_limits": {"max_bytes": 1234, "max_pixels": 5678}}
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(settings))
    with TestClient(app_from_env()) as worker:
        listing = worker.get("/translators").json()
        assert [t["name"] for t in listing["translators"]] == ["t"]
        assert (listing["max_upload_bytes"], listing["max_upload_pixels"]) == (1234, 5678)
        assert worker.get("/health").json()["generator"] is False


def test_real_server_serves_a_generator_and_a_translator(generator_checkpoint, folders):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"edit\"\r\n\r\ncat:dog\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + GOOD + f"\r\n--{boundary}--\r\n".encode()
    extra = ("--translator", str(folders[0]), "--max-upload-bytes", "100000", "--no-access-log")
    with running_server(generator_checkpoint, *extra) as (process, url, lines):
        assert any("translator 'car2truck': UNetTranslator 16x16 (2 edit(s): cat:dog, automobile:truck)" in line for line in lines)
        assert any("uploads up to 100000 bytes" in line for line in lines)
        request = urllib.request.Request(url + "/translate", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.headers["X-Edit"] == "cat:dog" and decode(answer.read()).shape == (16, 16, 3)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert any("after 0 generate request(s) and 1 translate request(s)" in line for line in lines), lines
