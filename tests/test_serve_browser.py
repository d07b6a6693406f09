"""End to end: the real ``distilgan serve`` in a subprocess, its page driven in headless Chromium: the
Generate tab, and the Translate tab of a server that also holds a translator.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package (never
``playwright install``: the system browser is used). Skips with the reason when either is absent.
Set DISTILGAN_SCREENSHOT=path.png to keep a screenshot of the page after generating.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("DISTILGAN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
    pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("fastapi", reason="distilgan serve needs fastapi and uvicorn")

from test_serve_api import CLASSES, running_server, save_tiny_checkpoint


@contextlib.contextmanager
def browser_page(url: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A Chromium page, with the console errors it logs and the requests it sends anywhere but the
    server (or its own data: and blob: URLs), which must stay empty: the page loads nothing from elsewhere."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            console_errors: list[str] = []
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            outside: list[str] = []
            page.on("request", lambda request: request.url.startswith((url, "data:", "blob:")) or outside.append(request.url))
            yield page, console_errors, outside
        finally:
            browser.close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("browser") / "student")


def test_page_generates_shows_and_downloads_images(checkpoint, tmp_path):
    with running_server(checkpoint, "--no-access-log", "--max-count", "12") as (process, url, _lines):
        with browser_page(url) as (page, console_errors, outside):
            page.goto(url + "/", wait_until="networkidle")
            boxes = page.locator("#classes input[type=checkbox]")
            assert boxes.count() == len(CLASSES)
            assert page.locator("#classes label").all_inner_texts() == CLASSES
            assert "DiStyleGANGenerator" in page.locator("#model-info").inner_text()

            # pick "cat" and "ship", 3 images each, a fixed seed
            for index, box in enumerate(boxes.all()):
                box.set_checked(CLASSES[index] in ("cat", "ship"))
            page.fill("#count", "3")
            page.fill("#seed", "7")
            page.click("#generate")
            page.wait_for_selector("#results img.sample", timeout=30_000)
            page.wait_for_function("document.querySelectorAll('#results img.sample').length === 6")
            # every image decoded by the browser at the model's resolution
            sizes = page.eval_on_selector_all("#results img.sample", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert sizes == [[True, 16, 16]] * 6
            assert page.locator("#results .class-row h2").all_inner_texts() == ["cat", "ship"]
            timing = page.locator("#timing").inner_text()
            assert timing.startswith("6 images in ") and timing.endswith(" ms")
            assert "seed 7" in page.locator("#status").inner_text()
            assert page.locator("#error").is_hidden()

            # downloads: the grid PNG and one individual PNG
            with page.expect_download() as grid_download:
                page.click("#download-grid")
            grid_path = tmp_path / "grid.png"
            grid_download.value.save_as(grid_path)
            assert grid_download.value.suggested_filename == "grid_seed7.png"
            assert grid_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            with page.expect_download() as one_download:
                page.locator("#results .images a").first.click()
            assert one_download.value.suggested_filename == "cat_7_0.png"
            href = page.locator("#results .images a").first.get_attribute("href")
            assert base64.b64decode(href.split(",", 1)[1])[:4] == b"\x89PNG"

            if os.environ.get("DISTILGAN_SCREENSHOT"):
                page.screenshot(path=os.environ["DISTILGAN_SCREENSHOT"], full_page=True)

            assert console_errors == [] and outside == []

            # a request the server refuses shows its message on the page
            page.fill("#seed", "99999999999")  # the server checks the seed's range
            page.click("#generate")
            page.wait_for_selector("#error:not([hidden])")
            assert "seed" in page.locator("#error").inner_text() and "4294967295" in page.locator("#error").inner_text()
            page.fill("#seed", "7")
            page.fill("#count", "7")  # 2 classes x 7 > --max-count 12, caught before sending
            page.click("#generate")
            assert "at most 12" in page.locator("#error").inner_text()
            assert page.locator("#results img.sample").count() == 6  # the last good answer stays

            assert [e for e in console_errors if "status of 422" not in e] == [] and outside == []
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def test_translate_tab_uploads_drops_and_shows_the_result(checkpoint, tmp_path):
    pytest.importorskip("python_multipart", reason="uploads need python-multipart")
    import io

    import numpy as np
    from PIL import Image

    from distilgan.pipeline import ImageTranslator
    from test_serve_translate import EDITS, noise, png, save_translators

    two, _ = save_translators(tmp_path / "models")
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(noise(30, 40)))
    (tmp_path / "notes.png").write_bytes(b"not an image at all")
    (tmp_path / "big.png").write_bytes(png(noise(200, 200)))  # over --max-upload-bytes
    expected = ImageTranslator.from_pretrained(two).translate(Image.open(photo), edit=1, output="np", resize=True)[0]
    extra = ("--translator", str(two), "--max-upload-bytes", "60000", "--no-access-log")
    with running_server(checkpoint, *extra) as (process, url, _lines):
        with browser_page(url) as (page, console_errors, outside):
            page.goto(url + "/", wait_until="networkidle")
            assert page.locator("#generate-panel").is_visible() and page.locator("#translate-panel").is_hidden()
            page.click("#tab-translate")
            assert page.locator("#translate-panel").is_visible() and page.locator("#generate-panel").is_hidden()
            assert page.locator("#translate-model option").all_inner_texts() == ["car2truck"]
            assert page.locator("#translate-edit option").all_inner_texts() == EDITS
            assert page.locator("#translate-submit").is_disabled()  # no image yet

            page.set_input_files("#translate-file", str(photo))
            assert "photo.png" in page.locator("#translate-input-caption").inner_text()
            page.select_option("#translate-edit", label="automobile:truck")
            page.click("#translate-submit")
            page.wait_for_selector("#translate-result:not([hidden])", timeout=30_000)
            page.wait_for_function("document.getElementById('translate-result').naturalWidth === 16")
            src = page.get_attribute("#translate-result", "src")
            shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
            np.testing.assert_array_equal(shown, expected)  # the Python API's pixels
            assert "resized 40x30 to 16x16" in page.locator("#translate-input-caption").inner_text()
            assert page.locator("#translate-timing").inner_text().startswith("translated in ")
            with page.expect_download() as download:
                page.click("#translate-download")
            assert download.value.suggested_filename == "photo_automobile_truck.png"

            # a file dropped on the zone is the next input
            transfer = page.evaluate_handle(
                """(b64) => { const dt = new DataTransfer();
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], "dropped.png", {type: "image/png"})); return dt; }""",
                base64.b64encode(photo.read_bytes()).decode(),
            )
            page.dispatch_event("#translate-drop", "drop", {"dataTransfer": transfer})
            assert "dropped.png" in page.locator("#translate-input-caption").inner_text()
            assert page.locator("#translate-result").is_hidden()  # the old result went with the old input

            if os.environ.get("DISTILGAN_SCREENSHOT"):
                page.click("#translate-submit")
                page.wait_for_selector("#translate-result:not([hidden])")
                shot = Path(os.environ["DISTILGAN_SCREENSHOT"])
                page.screenshot(path=str(shot.with_name(shot.stem + "-translate" + shot.suffix)), full_page=True)

            # errors are shown as the server's (or the page's own) one-line message
            page.set_input_files("#translate-file", str(tmp_path / "notes.png"))
            page.click("#translate-submit")
            page.wait_for_selector("#translate-error:not([hidden])")
            assert "not a PNG or JPEG image" in page.locator("#translate-error").inner_text()
            page.set_input_files("#translate-file", str(tmp_path / "big.png"))
            assert "at most 58.6 KiB" in page.locator("#translate-error").inner_text()  # caught before sending

            page.goto(url + "/#translate", wait_until="networkidle")  # a link can open the tab
            assert page.locator("#translate-panel").is_visible()
            assert [e for e in console_errors if "status of 415" not in e] == [] and outside == []
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
