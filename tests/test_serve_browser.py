"""End to end: the real ``distilgan serve`` in a subprocess, its page driven in headless Chromium.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package (never
``playwright install``: the system browser is used). Skips with the reason when either is absent.
Set DISTILGAN_SCREENSHOT=path.png to keep a screenshot of the page after generating.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
from pathlib import Path

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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("browser") / "student")


def test_page_generates_shows_and_downloads_images(checkpoint, tmp_path):
    with running_server(checkpoint, "--no-access-log", "--max-count", "12") as (process, url, _lines):
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 760})
                console_errors: list[str] = []
                page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
                page.on("pageerror", lambda error: console_errors.append(str(error)))
                outside: list[str] = []
                page.on("request", lambda request: request.url.startswith(url) or request.url.startswith("data:") or outside.append(request.url))

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
            finally:
                browser.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
