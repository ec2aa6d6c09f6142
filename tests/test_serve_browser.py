"""The web page in headless Chromium (Debian's, driven by Playwright): a photo upload and webcam
frames from Chromium's fake camera both end in rendered labels; screenshots are kept in
test-artifacts/."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from PIL import Image

from conftest import PATTERN_CLASSES, REPO, chromium, needs_chromium
from ferlab.apps.server import ServerSettings, create_app
from ferlab.inference import Recognizer

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium

ARTIFACTS = REPO / "test-artifacts"
LOCAL = ("http://127.0.0.1:", "blob:http://127.0.0.1:")  # the server, and images made in the page


@pytest.fixture(scope="module")
def astronaut_file(photos: Path) -> Path:
    return photos / "astronaut.png"


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def base_url(pattern_run: Path) -> Iterator[str]:
    with running_server(create_app(pattern_run, ServerSettings(api_key=None))) as url:
        yield url


def write_y4m(path: Path, rgb: np.ndarray) -> Path:
    """One frame of ``rgb`` as a Y4M file (I420, BT.601 studio range), Chromium's fake camera."""
    r, g, b = (rgb[:, :, i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b

    def plane(values: np.ndarray, step: int) -> bytes:
        height, width = values.shape
        if step == 2:
            values = values.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        return np.clip(np.round(values), 0, 255).astype(np.uint8).tobytes()

    height, width = y.shape
    header = f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + b"FRAME\n" + plane(y, 1) + plane(u, 2) + plane(v, 2))
    return path


@contextmanager
def page_in_chromium(tmp_path: Path, *args: str) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium and the problems it reports: console errors, failed
    requests and requests to anywhere but the server (or the page's own blob: URLs)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", *args]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on(
                "request",
                lambda r: r.url.startswith(LOCAL) or problems.append(r.url),
            )
            yield page, problems
        finally:
            browser.close()


def keep(page: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in tmp_path, copied to test-artifacts/."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot


def test_photo_upload_renders_boxes_labels_and_bars(
    base_url: str, pattern_run: Path, astronaut_file: Path, tmp_path: Path
) -> None:
    (want,) = Recognizer.load(pattern_run).predict(astronaut_file)
    with page_in_chromium(tmp_path) as (page, problems):
        page.goto(base_url)
        page.wait_for_function(
            "() => document.getElementById('model').textContent.includes('classes')"
        )
        page.set_input_files("#file", str(astronaut_file))
        label = page.wait_for_selector("#faces .face-label", timeout=60_000)
        assert label.text_content() == want.label
        assert "1 face" in page.text_content("#status")
        bars = page.query_selector_all("#faces .bar")
        assert [bar.query_selector("span").text_content() for bar in bars] == [
            name for name, _ in want.top(len(PATTERN_CLASSES))
        ]
        shares = page.eval_on_selector_all(
            ".fill", "fills => fills.map(f => f.offsetWidth / f.parentElement.offsetWidth)"
        )
        assert shares == pytest.approx([p for _, p in want.top(len(PATTERN_CLASSES))], abs=0.01)
        assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [512, 512]
        shot = keep(page, tmp_path, "serve-photo.png")
        assert problems == []
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 1000  # the photo was drawn


def test_clicking_a_face_shows_its_heatmap(
    base_url: str, pattern_run: Path, astronaut_file: Path, tmp_path: Path
) -> None:
    (want,) = Recognizer.load(pattern_run).predict(astronaut_file)
    assert want.box is not None
    x1, y1, x2, y2 = want.box
    with page_in_chromium(tmp_path) as (page, problems):
        page.goto(base_url)
        page.wait_for_function(
            "() => document.getElementById('model').textContent.includes('classes')"
        )
        page.set_input_files("#file", str(astronaut_file))
        page.wait_for_selector("#faces .face-label", timeout=60_000)
        assert "click a face for its heatmap" in page.text_content("#status")
        bounds = page.eval_on_selector("#canvas", "c => c.getBoundingClientRect().toJSON()")
        scale = bounds["width"] / 512
        page.mouse.click(bounds["x"] + (x1 + x2) / 2 * scale, bounds["y"] + (y1 + y2) / 2 * scale)
        picture = page.wait_for_selector(".heatmap img", timeout=60_000)
        page.wait_for_function("() => document.querySelector('.heatmap img').naturalWidth > 0")
        side = max(x2 - x1, y2 - y1)
        assert picture.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [side, side]
        caption = page.text_content(".heatmap figcaption")
        assert caption.startswith(f"{want.label} {want.score:.2f}") and "one view" in caption
        keep(page, tmp_path, "serve-heatmap.png")
        assert problems == []


def test_webcam_frames_are_sent_and_labelled(
    base_url: str, astronaut_file: Path, tmp_path: Path
) -> None:
    rgb = np.asarray(Image.open(astronaut_file).convert("RGB"))
    camera = write_y4m(tmp_path / "camera.y4m", rgb)
    fake_camera = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    )
    with page_in_chromium(tmp_path, *fake_camera) as (page, problems):
        page.goto(base_url)
        page.click("#camera")
        page.wait_for_function(
            "() => Number(document.getElementById('status').dataset.frames) >= 6", timeout=60_000
        )
        assert page.text_content("#faces .face-label") in PATTERN_CLASSES
        assert "frames/s" in page.text_content("#status")
        # detection on frames 0 and 1 (a new face), then every 3rd: the others send its box
        counts = page.eval_on_selector("#status", "s => [s.dataset.frames, s.dataset.detections]")
        frames, detections = (int(count) for count in counts)
        assert 2 <= detections <= 2 + (frames - 2) // 3 + 1, (frames, detections)
        keep(page, tmp_path, "serve-webcam.png")
        page.click("#camera")
        assert page.text_content("#camera") == "Start webcam"
        assert problems == []


def test_api_docs_render_offline(base_url: str, tmp_path: Path) -> None:
    with page_in_chromium(tmp_path) as (page, problems):
        page.goto(base_url + "docs")
        page.wait_for_selector(".opblock-summary-path")
        paths = [item.text_content() for item in page.query_selector_all(".opblock-summary-path")]
        assert paths == ["/v1/models", "/v1/predict", "/v1/explain", "/healthz"]
        assert problems == []
