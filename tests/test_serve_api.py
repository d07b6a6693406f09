"""``distilgan serve``: the HTTP API in-process (FastAPI TestClient), its limits and errors, and the
real server in a subprocess (start-up line, graceful SIGTERM with a request in flight, --workers 2
and SIGINT)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="distilgan serve needs fastapi (pip install fastapi uvicorn httpx)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

import torch
from PIL import Image

from distilgan.errors import UserError
from distilgan.models import DiStyleGANGenerator
from distilgan.pipeline import StudentGenerator
from distilgan.utils.images import make_grid

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

CLASSES = ["cat", "dog", "ship"]
FIGURES = {"fid": 41.5, "protocol": {"network": "inception-2015-12-05", "samples": 10000}}


def save_tiny_checkpoint(folder: Path) -> Path:
    """A 16x16, 3-class generator whose images clearly depend on the label (see test_generate.py)."""
    torch.manual_seed(0)
    g = DiStyleGANGenerator(z_dim=16, num_classes=3, project_dim=8, ngf=32, resolution=16, class_names=CLASSES)
    with torch.no_grad():
        g.fc[0].weight[:, 8:] *= 20.0
        g.to_image[0].weight *= 30.0
    g.save_pretrained(folder, metadata={"metrics": FIGURES, "run": "unit-test"})
    return folder


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "student")


@pytest.fixture(scope="module")
def client(checkpoint):
    from fastapi.testclient import TestClient

    from distilgan.serve import create_app, load_backend

    with TestClient(create_app(load_backend("torch", checkpoint), max_count=16)) as test_client:
        yield test_client


def post(client, body: dict):
    return client.post("/generate", json=body)


# --- endpoints -----------------------------------------------------------------------------------


def test_health(client):
    answer = client.get("/health")
    assert answer.status_code == 200
    facts = answer.json()
    assert facts["status"] == "ok" and facts["backend"] == "torch" and facts["uptime_s"] >= 0


def test_model_describes_the_checkpoint(client, checkpoint):
    from distilgan.models.macs import count_macs

    facts = client.get("/model").json()
    model = StudentGenerator.from_pretrained(checkpoint).model
    counted = count_macs(model)
    assert facts["class_names"] == CLASSES and facts["num_classes"] == 3
    assert (facts["resolution"], facts["channels"], facts["z_dim"]) == (16, 3, 16)
    assert facts["parameters"] == counted.params > 0
    assert facts["macs_per_image"] == counted.macs_per_image > 0
    assert facts["backend"] == "torch" and facts["device"] == "cpu" and facts["max_count"] == 16
    assert facts["config"]["architecture"] == "DiStyleGANGenerator" and facts["config"]["ngf"] == 32
    assert facts["metadata"]["run"] == "unit-test"
    assert facts["figures"]["metrics"] == FIGURES


def test_grid_png_matches_the_python_api(client, checkpoint):
    answer = post(client, {"labels": ["cat", 2], "count": 3, "seed": 11})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["x-seed"] == "11" and answer.headers["x-image-count"] == "6"
    assert answer.headers["x-labels"] == "0,0,0,2,2,2" and answer.headers["x-grid-nrow"] == "3"
    assert float(answer.headers["x-generation-ms"]) > 0
    expected = StudentGenerator.from_pretrained(checkpoint).generate([0, 0, 0, 2, 2, 2], seed=11, output="np")
    np.testing.assert_array_equal(decode_png(answer.content), make_grid(expected, nrow=3))


def test_images_json_matches_the_python_api(client, checkpoint):
    answer = post(client, {"labels": [1, "ship"], "total": 5, "seed": 4, "truncation": 0.8, "format": "images"})
    assert answer.status_code == 200
    facts = answer.json()
    labels = [1, 2, 1, 2, 1]  # total cycles through the labels
    assert [image["label"] for image in facts["images"]] == labels
    assert [image["class_name"] for image in facts["images"]] == [CLASSES[i] for i in labels]
    assert (facts["seed"], facts["count"], facts["width"], facts["height"]) == (4, 5, 16, 16)
    assert facts["generation_ms"] > 0 and facts["truncation"] == 0.8
    expected = StudentGenerator.from_pretrained(checkpoint).generate(labels, seed=4, truncation=0.8, output="np")
    got = np.stack([decode_png(base64.b64decode(image["png_base64"])) for image in facts["images"]])
    np.testing.assert_array_equal(got, expected)
    grid = decode_png(base64.b64decode(facts["grid_png_base64"]))
    np.testing.assert_array_equal(grid, make_grid(expected, nrow=facts["nrow"]))
    assert not np.array_equal(got[0], got[1])  # different classes give different images


def test_defaults_and_random_seed_is_reported(client):
    answer = post(client, {"format": "images"})  # every class once, a random seed
    facts = answer.json()
    assert answer.status_code == 200 and [image["label"] for image in facts["images"]] == [0, 1, 2]
    again = post(client, {"seed": facts["seed"], "format": "images"}).json()
    assert [i["png_base64"] for i in again["images"]] == [i["png_base64"] for i in facts["images"]]


# --- bad requests: 4xx with {"error": ...}, and the server keeps answering ----------------------

BAD_BODIES = [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b"", 422, "body is missing"),
    (b'{"labels": [3]}', 422, "class index 3 is outside 0..2"),
    (b'{"labels": [-1]}', 422, "class index -1"),
    (b'{"labels": ["cat", "kat"]}', 422, "labels[1]: unknown class 'kat'"),
    (b'{"labels": []}', 422, "labels is empty"),
    (b'{"labels": [true]}', 422, "class index (integer) or a class name"),
    (b'{"labels": [0.5]}', 422, "labels[0]"),
    (b'{"labels": "cat"}', 422, "labels"),
    (b'{"count": 1000000}', 422, "3000000 images asked for; this server makes at most 16"),
    (b'{"count": 99999999999999999999999999999}', 422, "at most 16"),
    (b'{"total": 17}', 422, "17 images asked for"),
    (b'{"labels": [' + b"0," * 20 + b"0]}", 422, "21 labels given"),
    (b'{"count": 0}', 422, "count"),
    (b'{"count": "3"}', 422, "count"),
    (b'{"count": 2, "total": 4}', 422, "not both"),
    (b'{"seed": -1}', 422, "seed"),
    (b'{"seed": 1e3}', 422, "seed"),
    (b'{"truncation": 0}', 422, "truncation"),
    (b'{"truncation": 0.001}', 422, "greater than or equal to 0.05"),
    (b'{"truncation": NaN}', 422, "truncation"),
    (b'{"format": "gif"}', 422, "format"),
    (b'{"labels": [0], "size": 4}', 422, "unknown field 'size'"),
]


@pytest.mark.parametrize("body,status,message", BAD_BODIES, ids=[b[0][:30].decode() or "empty" for b in BAD_BODIES])
def test_bad_requests_get_a_clear_error(client, body, status, message):
    answer = client.post("/generate", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert message in error and "\n" not in error
    assert client.get("/health").status_code == 200
    assert post(client, {"labels": [0], "seed": 1}).status_code == 200


def test_oversize_bodies_are_refused(client):
    big = b'{"labels": [' + b"0, " * 30000 + b"0]}"  # ~90 KiB
    answer = client.post("/generate", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "64 KiB" in answer.json()["error"]

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        for _ in range(40):
            yield b" " * 4096

    answer = client.post("/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "64 KiB" in answer.json()["error"]
    assert post(client, {"labels": [0]}).status_code == 200


def test_wrong_content_type_route_and_method(client):
    answer = client.post("/generate", content=b'{"labels": [0]}', headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415 and "application/json" in answer.json()["error"]
    answer = client.get("/nowhere")
    assert answer.status_code == 404 and "/nowhere" in answer.json()["error"]
    answer = client.get("/generate")
    assert answer.status_code == 405 and "GET" in answer.json()["error"]


# --- schema, docs and page --------------------------------------------------------------------------


def test_openapi_schema_and_local_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/generate", "/health", "/model"} <= set(schema["paths"])
    body_ref = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]["properties"]
    assert {"labels", "count", "total", "seed", "truncation", "format"} <= set(fields)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "POST /generate" in docs.text and "truncation" in docs.text
    assert not re.search(r"""(src|href)=["']https?://""", docs.text)  # nothing from a CDN


def test_page_and_static_files_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/static/app.js"' in page.text and not re.search(r"""(src|href)=["']https?://""", page.text)
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
    assert "fetchJson(\"/generate\"" in client.get("/static/app.js").text


# --- concurrency ----------------------------------------------------------------------------------


def test_concurrent_requests_are_all_served_and_deterministic(client):
    before = client.get("/health").json()["requests_served"]
    bodies = [{"labels": [i % 3], "count": 2, "seed": i % 4} for i in range(48)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda body: post(client, body), bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    by_request: dict[str, bytes] = {}
    for body, answer in zip(bodies, answers):
        key = json.dumps(body, sort_keys=True)
        assert by_request.setdefault(key, answer.content) == answer.content  # same request, same bytes
    assert client.get("/health").json()["requests_served"] == before + len(bodies)


# --- backends and the command line -------------------------------------------------------------------


def test_backends(checkpoint):
    from distilgan.serve.backend import load_backend

    backend = load_backend("torch", checkpoint)
    images = backend.generate(np.zeros((2, 16), np.float32), np.array([0, 2]))
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    with pytest.raises(UserError, match="distilgan-export.json"):  # a checkpoint is not an export
        load_backend("openvino", checkpoint)
    with pytest.raises(UserError, match="unknown backend"):
        load_backend("tensorrt", checkpoint)


def test_exported_model_serves_the_same_images_without_torch_backend(checkpoint, tmp_path):
    """`serve --backend openvino --model DIR`: the exported IR gives the torch backend's images (to uint8
    rounding of the export's float error), and the app serves it like a checkpoint."""
    pytest.importorskip("openvino")
    from fastapi.testclient import TestClient

    from distilgan.deploy.export import export_checkpoint
    from distilgan.serve.app import create_app
    from distilgan.serve.backend import load_backend

    export_checkpoint(checkpoint, tmp_path / "ov", fmt="openvino", precision="fp32")
    exported, reference = load_backend("openvino", tmp_path / "ov"), load_backend("torch", checkpoint)
    z = np.random.default_rng(0).standard_normal((6, exported.z_dim)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    diff = np.abs(exported.generate(z, labels).astype(int) - reference.generate(z, labels).astype(int))
    assert diff.max() <= 1 and exported.class_names == reference.class_names
    with pytest.raises(UserError, match="--backend openvino"):
        load_backend("onnxruntime", tmp_path / "ov")
    with TestClient(create_app(exported, max_count=8)) as client:
        response = client.post("/generate", json={"labels": [0, 2], "count": 2, "seed": 1})
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        facts = client.get("/model").json()
        assert facts["backend"] == "openvino"
        assert facts["parameters"] == reference.describe()["parameters"] > 0
        assert facts["macs_per_image"] == reference.describe()["macs_per_image"] > 0


def test_cli_errors_are_one_line(cli, checkpoint, tmp_path):
    for args, message in (
        (("--checkpoint", tmp_path / "missing"), "checkpoint not found"),
        (("--checkpoint", checkpoint, "--max-count", "0"), "--max-count must be >= 1"),
        (("--checkpoint", checkpoint, "--port", "70000"), "--port must be in 0..65535"),
        (("--checkpoint", checkpoint, "--backend", "openvino"), "distilgan-export.json"),
    ):
        code, _, err = cli("serve", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = cli("serve", "--checkpoint", checkpoint, "--port", busy.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1" in err and "--port" in err


# --- the real server in a subprocess -------------------------------------------------------------------


@contextlib.contextmanager
def running_server(checkpoint: Path, *extra: str, timeout: float = 60.0) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """Start ``distilgan serve --port 0`` and yield (process, base URL, lines it printed so far);
    the process is stopped (SIGTERM, then SIGKILL) on exit if the test has not stopped it."""
    command = [sys.executable, "-m", "distilgan", "serve", "--checkpoint", str(checkpoint), "--port", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    url_found: queue.Queue[str] = queue.Queue()

    def read() -> None:  # keeps draining the pipe so the server never blocks on its log
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if match:
                url_found.put(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        try:
            url = url_found.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("server did not start:\n" + "\n".join(lines)) from None
        yield process, url, lines
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=5)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_sigterm_finishes_the_request_in_flight(checkpoint):
    body = json.dumps({"labels": ["dog"], "count": 2, "seed": 3}).encode()
    with running_server(checkpoint, "--no-access-log") as (process, url, lines):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            head = f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            connection.sendall(head.encode() + body[:5])  # the request is now in flight, body half sent
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while not _refused(port):  # shutting down: no new connections
                assert time.monotonic() < deadline, "server kept accepting connections after SIGTERM"
                time.sleep(0.1)
            assert process.poll() is None  # ... but still waiting for our request
            connection.sendall(body[5:])
            response = b""
            while chunk := connection.recv(65536):
                response += chunk
        assert process.wait(timeout=30) == 0
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response[:200]
    assert b"content-type: image/png" in rest.lower() and b"x-seed: 3" in rest.lower()
    assert decode_png(rest.split(b"\r\n\r\n", 1)[1]).shape == (20, 38, 3)  # 2 images of 16 px, 2 px padding
    assert any("stopped by SIGTERM after 1 generate request(s)" in line for line in lines)


@pytest.mark.slow
def test_two_worker_processes_serve_and_stop(checkpoint):
    import urllib.request

    body = json.dumps({"labels": ["ship"], "count": 2, "seed": 5}).encode()
    with running_server(checkpoint, "--workers", "2", "--no-access-log") as (process, url, lines):
        answers = []
        for _ in range(60):  # workers come up one by one: retry until both have answered or time runs out
            request = urllib.request.Request(url + "/generate", data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answers.append(answer.read())
            except OSError:
                time.sleep(0.5)
            if len(answers) >= 4:
                break
        assert len(answers) >= 4 and len(set(answers)) == 1  # every worker gives the same bytes
        process.send_signal(signal.SIGINT)  # Ctrl+C; the one-process path is covered by the browser test
        assert process.wait(timeout=30) == 0
    assert sum("Started server process" in line for line in lines) == 2
    assert not any("Traceback" in line for line in lines)


def test_an_internal_error_is_500_without_its_text_and_logged_with_its_traceback(checkpoint, caplog):
    from fastapi.testclient import TestClient

    from distilgan.serve import create_app, load_backend

    backend = load_backend("torch", checkpoint)

    def broken(z, labels):
        raise RuntimeError("secret path /home/someone/weights.bin")

    backend.generate = broken
    with TestClient(create_app(backend, max_count=4), raise_server_exceptions=False) as broken_client:
        with caplog.at_level("ERROR", logger="distilgan.serve"):
            answer = post(broken_client, {"labels": [0]})
    assert answer.status_code == 500
    body = answer.text
    assert "secret path" not in body and "RuntimeError" not in body and "incident" in body
    incident = body.split("incident ")[1][:12]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and "secret path" in str(logged[0].exc_info[1])
