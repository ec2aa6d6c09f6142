"""The web service: endpoints, upload checks, API key, time limit, concurrency, `ferlab serve`."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from starlette.types import Message

from conftest import PATTERN_CLASSES
from ferlab.apps.limits import MemoryBudget, MemoryFull
from ferlab.apps.server import API_KEY_ENV, STATIC, ServerSettings, create_app
from ferlab.apps.service import ModelService
from ferlab.apps.uploads import BodyLimit, sniff_image_type
from ferlab.cli import main
from ferlab.inference import Face, Recognizer
from ferlab.inference.explain import Explanation
from ferlab.inference.images import decode_cost, load_image
from ferlab.inference.onnx_export import cached_onnx
from ferlab.inference.recognizer import FaceResult


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "photo.png", kind: str = "image/png") -> dict[str, Any]:
    return {"file": (name, data, kind)}


def local_client(app: FastAPI, host: str = "127.0.0.1:8000") -> TestClient:
    """A client whose requests name ``host``, as a browser on this machine would."""
    return TestClient(app, base_url=f"http://{host}")


@pytest.fixture(scope="module")
def astronaut(photos: Path) -> bytes:
    return (photos / "astronaut.png").read_bytes()


@pytest.fixture(scope="module")
def blank() -> bytes:
    return png_bytes(Image.new("RGB", (320, 240), (200, 200, 200)))


@pytest.fixture(scope="module")
def service(pattern_run: Path) -> ModelService:
    return ModelService.load(pattern_run)


@pytest.fixture(scope="module")
def onnx_only(pattern_run: Path) -> ModelService:
    return ModelService.load(cached_onnx(pattern_run / "model.pt"))


@pytest.fixture(scope="module")
def client(service: ModelService) -> Iterator[TestClient]:
    settings = ServerSettings(max_upload_bytes=2**20, timeout_s=60, api_key=None, explain_queue=8)
    app = create_app(service, settings)
    with local_client(app) as test_client:
        yield test_client


def test_health_models_docs_and_offline_page(client: TestClient, pattern_run: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    (model,) = client.get("/v1/models").json()["models"]
    assert model["classes"] == sorted(PATTERN_CLASSES)
    assert model["name"] == "baseline_cnn"
    assert model["ref"] == pattern_run.name
    assert (model["runtime"], model["explain"]) == ("torch", True)
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/models", "/healthz"} <= set(spec["paths"])
    docs = client.get("/docs").text
    for asset in re.findall(r'(?:href|src)="([^"]+)"', docs):
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset
    page = client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="file"' in page.text and 'id="camera"' in page.text
    for asset in re.findall(r'(?:href|src)="([^"]+)"', page.text):
        assert client.get("/" + asset).status_code == 200, asset
    for file in STATIC.iterdir():  # nothing fetched from elsewhere
        assert not re.search(r"(?:https?:)?//[a-z]", file.read_text().replace("http://www.w3", ""))


def test_predict_gives_the_recognizer_results(
    client: TestClient, pattern_run: Path, photos: Path, astronaut: bytes
) -> None:
    response = client.post("/v1/predict", files=upload(astronaut))
    assert response.status_code == 200, response.text
    body = response.json()
    (want,) = Recognizer.load(pattern_run).predict(photos / "astronaut.png")
    assert (body["width"], body["height"]) == (512, 512)
    (face,) = body["faces"]
    assert face == want.to_dict()
    assert face["label"] in PATTERN_CLASSES
    assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["time_ms"] > 0


def test_predict_classifies_given_boxes_without_detection(
    client: TestClient, pattern_run: Path, photos: Path, astronaut: bytes
) -> None:
    recognizer = Recognizer.load(pattern_run)
    image = load_image(photos / "astronaut.png")
    (found,) = recognizer.find_faces(image)
    moved = (found.box[0] + 4, found.box[1], found.box[2] + 4, found.box[3])
    boxes = "0,0,100,120;" + ",".join(str(value) for value in moved)
    response = client.post("/v1/predict", files=upload(astronaut), params={"boxes": boxes})
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    want = recognizer.predict_faces([image], [[Face((0, 0, 100, 120), 1), Face(moved, 1)]])[0]
    assert [face["box"] for face in faces] == [[0, 0, 100, 120], list(moved)]
    assert all(face["detection_score"] is None for face in faces)
    for face, expected in zip(faces, want, strict=True):
        assert face["probs"] == pytest.approx(expected.probs, abs=1e-5)
    for boxes, message in (
        ("1,2,3", "is not x1,y1,x2,y2"),
        (f"0,0,{10**400},20", "in integers of up to 9 digits"),  # not a 500 from float()
        ("0,0,1_0,20", "is not x1,y1,x2,y2"),
        ("0,0,\uff11\uff10,20", "is not x1,y1,x2,y2"),  # full-width digits
        ("10,10,5,20", "is empty"),
        ("600,0,700,50", "lies outside the image"),
        (";".join(["0,0,9,9"] * 65), "at most 64"),
    ):
        response = client.post("/v1/predict", files=upload(astronaut), params={"boxes": boxes})
        assert response.status_code == 422 and message in response.json()["error"], boxes


def test_predict_without_faces_and_declared_type_ignored(client: TestClient, blank: bytes) -> None:
    response = client.post("/v1/predict", files=upload(blank, "notes.txt", "text/plain"))
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == []
    assert (response.json()["width"], response.json()["height"]) == (320, 240)


def test_explain_returns_a_png_overlay(
    client: TestClient, service: ModelService, astronaut: bytes, blank: bytes
) -> None:
    response = client.post("/v1/explain", files=upload(astronaut))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.format == "PNG" and overlay.mode == "RGB"
    box = client.post("/v1/predict", files=upload(astronaut)).json()["faces"][0]["box"]
    side = max(box[2] - box[0], box[3] - box[1])
    assert overlay.size == (side, side)
    assert np.asarray(overlay).std() > 10  # a heatmap, not a flat image
    assert (response.headers["x-face"], response.headers["x-faces"]) == ("1", "1")
    assert response.headers["x-label"] in PATTERN_CLASSES
    other = sorted(set(PATTERN_CLASSES) - {response.headers["x-label"]})[0]
    targeted = client.post(f"/v1/explain?target_class={other}", files=upload(astronaut))
    assert targeted.headers["x-label"] == other
    assert targeted.content != response.content
    cases = [
        ("/v1/explain?face=2", astronaut, 422, "face 2 asked for, the image has 1"),
        ("/v1/explain?target_class=bored", astronaut, 422, "bored"),
        ("/v1/explain?face=0", astronaut, 422, "face: "),
        ("/v1/explain?method=lime", astronaut, 422, "lime"),
        ("/v1/explain", blank, 422, "no face found"),
    ]
    for url, data, status, message in cases:
        response = client.post(url, files=upload(data))
        assert response.status_code == status, (url, response.text)
        assert message in response.json()["error"]


def test_oversize_uploads_get_413(service: ModelService, astronaut: bytes) -> None:
    app = create_app(service, ServerSettings(max_upload_bytes=100_000, api_key=None))
    with local_client(app) as client:
        response = client.post("/v1/predict", files=upload(astronaut))
        assert response.status_code == 413
        assert response.json() == {"error": "upload too large: the limit is 100000 bytes"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(astronaut), 16_384):
                yield astronaut[start : start + 16_384]

        streamed = client.post("/v1/predict", content=chunks(), headers={"content-type": "image"})
        assert streamed.status_code == 413
        small = png_bytes(Image.new("RGB", (64, 64)))
        assert client.post("/v1/predict", files=upload(small)).status_code == 200


def test_non_images_get_415_by_content(client: TestClient, astronaut: bytes) -> None:
    for data in (b"hello, world\n", b"%PDF-1.7\n" + astronaut[8:], b"\x00" * 100):
        response = client.post("/v1/predict", files=upload(data, "photo.png", "image/png"))
        assert response.status_code == 415, response.text
        assert response.json()["error"].startswith("not a supported image: expected BMP, GIF")
    assert client.post("/v1/explain", files=upload(b"text")).status_code == 415


def test_empty_missing_and_broken_uploads(client: TestClient, astronaut: bytes) -> None:
    missing = client.post("/v1/predict")
    assert missing.status_code == 422
    assert missing.json()["error"].startswith("file: no image in the form (send it as the mult")
    text = client.post("/v1/predict", data={"file": "photo.png"})
    assert text.json() == {
        "error": "file: a text field, not an uploaded file (send the image as a file)"
    }
    empty = client.post("/v1/predict", files=upload(b""))
    assert empty.status_code == 400
    assert empty.json() == {"error": "empty upload: the file holds no bytes"}
    truncated = client.post("/v1/predict", files=upload(astronaut[:5000]))
    assert truncated.status_code == 422
    assert truncated.json()["error"].startswith("upload: cannot read image")
    not_found = client.get("/v1/nothing")
    assert (not_found.status_code, not_found.json()) == (404, {"error": "Not Found"})


def test_nothing_a_client_sends_is_silently_dropped(client: TestClient, blank: bytes) -> None:
    assert client.head("/healthz").status_code == 200
    photo = ("photo.png", blank, "image/png")
    two = client.post("/v1/predict", files=[("file", photo), ("file", photo)])
    assert (two.status_code, two.json()) == (422, {"error": "file: one image per request"})
    extra = client.post("/v1/predict", files=[("file", photo), ("other", photo)], data={"x": "1"})
    assert extra.status_code == 422
    assert extra.json() == {"error": "form part(s) other, x: takes only file"}
    for path, query, message in [
        ("/v1/predict", "?prior_tau=5", "unknown query parameter(s) prior_tau; takes boxes"),
        ("/v1/predict", "?boxes=0,0,5,5&boxes=1,1,6,6", "boxes: given more than once"),
        ("/v1/explain", "?top_k=2", "unknown query parameter(s) top_k; takes face, method, target"),
    ]:
        response = client.post(path + query, files=upload(blank))
        assert response.status_code == 422 and response.json()["error"].startswith(message)
    assert client.post("/v1/predict?boxes=0,0,5,5", files=upload(blank)).status_code == 200


def test_images_over_the_decoder_limit_get_413(client: TestClient) -> None:
    huge = png_bytes(Image.new("1", (10_000, 10_000)))  # 100 MP: over PIL's bomb warning, too
    response = client.post("/v1/predict", files=upload(huge))
    assert response.status_code == 413
    assert response.json()["error"] == (
        "image too large: upload: refused as a decompression bomb (its header claims 100 MP; the "
        "limit is 80 MP)"
    )


def test_api_key_from_the_environment_or_settings(
    service: ModelService, blank: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "s3cret")
    refused = {"error": "missing or wrong API key (header X-API-Key or Authorization: Bearer)"}
    for app in (create_app(service), create_app(service, ServerSettings(api_key="s3cret"))):
        with local_client(app) as client:
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
                response = client.get("/v1/models", headers=headers)
                assert (response.status_code, response.json()) == (401, refused)
                assert client.post("/v1/predict", files=upload(blank)).status_code == 401
            for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
                assert client.get("/v1/models", headers=headers).status_code == 200
                ok = client.post("/v1/predict", files=upload(blank), headers=headers)
                assert ok.status_code == 200
            assert client.get("/healthz").status_code == 200
            assert client.get("/").status_code == 200
    monkeypatch.delenv(API_KEY_ENV)
    with local_client(create_app(service)) as client:
        assert client.get("/v1/models").status_code == 200


def test_foreign_hosts_and_origins_are_refused(service: ModelService, blank: bytes) -> None:
    app = create_app(service, ServerSettings(api_key=None))
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        with local_client(app, host) as client:
            assert client.get("/v1/models").status_code == 200, host
            same_site = {"Origin": f"http://{host}"}  # the page this server sent
            posted = client.post("/v1/predict", files=upload(blank), headers=same_site)
            assert posted.status_code == 200, host
    for host in ("evil.example:8000", "rebound.example", "192.168.1.7:8000", "[bad"):
        with local_client(app, host) as client:
            for path in ("/v1/models", "/healthz", "/"):
                response = client.get(path)
                assert response.status_code == 403, (host, path)
                assert (
                    "is not a name of this server (see --allow-origin)" in response.json()["error"]
                )
    with local_client(app) as client:
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
            response = client.post("/v1/predict", files=upload(blank), headers={"Origin": origin})
            assert response.status_code == 403, origin
            assert response.json() == {"error": f"origin '{origin}' may not call this server"}
            assert client.get("/v1/models", headers={"Origin": origin}).status_code == 403

    allowed = ServerSettings(api_key=None, allow_origins=("https://app.example",))
    with local_client(create_app(service, allowed)) as client:
        headers = {"Origin": "https://app.example"}
        response = client.post("/v1/predict", files=upload(blank), headers=headers)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        preflight = client.options(
            "/v1/predict",
            headers={
                **headers,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        assert (
            client.get("/v1/models", headers={"Origin": "https://evil.example"}).status_code == 403
        )
    with local_client(create_app(service, allowed), "app.example") as client:
        assert client.get("/v1/models").status_code == 200

    anywhere = ServerSettings(api_key=None, host="0.0.0.0")
    for host, status in [("192.168.1.7:8000", 200), ("[fe80::1]", 200), ("evil.example", 403)]:
        with local_client(create_app(service, anywhere), host) as client:
            assert client.get("/v1/models").status_code == status, host


def test_no_response_reveals_a_server_path(
    service: ModelService,
    onnx_only: ModelService,
    pattern_run: Path,
    astronaut: bytes,
    blank: bytes,
) -> None:
    onnx_file = cached_onnx(pattern_run / "model.pt")
    folders = {str(pattern_run.parent), str(pattern_run.resolve().parent), str(onnx_file.parent)}
    requests = [
        ("GET", "/v1/models", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
        ("GET", "/", None),
        ("GET", "/nothing", None),
        ("POST", "/v1/predict", upload(astronaut)),
        ("POST", "/v1/predict", upload(astronaut[:5000])),
        ("POST", "/v1/predict", upload(b"text")),
        ("POST", "/v1/explain", upload(astronaut)),
        ("POST", "/v1/explain?face=3", upload(astronaut)),
        ("POST", "/v1/explain", upload(blank)),
        ("POST", "/v1/explain", upload(astronaut)),
    ]
    for served in (service, onnx_only):
        settings = ServerSettings(api_key=None, max_upload_bytes=2**20)
        with local_client(create_app(served, settings)) as client:
            for method, url, files in requests:
                response = client.request(method, url, files=files)
                seen = response.content + str(response.headers).encode()
                assert not any(folder.encode() in seen for folder in folders), (url, seen[:300])
    assert response.json() == {  # the last one: explained by onnx_only
        "error": "this server's model has no heatmaps: "
        f"{onnx_file.name}: Grad-CAM needs PyTorch weights and this model runs on onnxruntime; "
        "use its .pt model file (on PyTorch)"
    }


def test_requests_past_the_time_limit_get_504(service: ModelService, blank: bytes) -> None:
    app = create_app(service, ServerSettings(timeout_s=0.3, api_key=None))
    with local_client(app) as client:
        with service.lock:  # the model is busy with another request
            response = client.post("/v1/predict", files=upload(blank))
        assert response.status_code == 504
        assert response.json() == {"error": "the request took longer than 0.3 s"}
        assert client.post("/v1/predict", files=upload(blank)).status_code == 200


def test_concurrent_requests_match_sequential_ones(
    client: TestClient, photos: Path, astronaut: bytes, blank: bytes
) -> None:
    mirrored = png_bytes(
        Image.open(io.BytesIO(astronaut)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    )
    hopper = (photos / "grace_hopper.jpg").read_bytes()
    requests = [
        ("/v1/predict", astronaut),
        ("/v1/predict", hopper),
        ("/v1/explain", astronaut),
        ("/v1/predict", blank),
        ("/v1/predict", mirrored),
        ("/v1/explain", hopper),
    ] * 3

    def send(request: tuple[str, bytes]) -> Any:
        url, data = request
        response = client.post(url, files=upload(data))
        assert response.status_code == 200, response.text
        if url == "/v1/explain":
            return response.headers["x-label"], response.content
        return {key: value for key, value in response.json().items() if key != "time_ms"}

    sequential = [send(request) for request in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(send, requests))
    assert concurrent == sequential
    assert sequential[0] != sequential[4]  # the mirrored face is boxed elsewhere


def test_onnx_runtime_serves_predictions_and_heatmaps_need_torch(
    pattern_run: Path, onnx_only: ModelService, astronaut: bytes
) -> None:
    served = ModelService.load(pattern_run, backend="onnx")
    assert (served.describe()["runtime"], served.describe()["explain"]) == ("onnxruntime", True)
    assert onnx_only.describe()["explain"] is False
    (want,) = Recognizer.load(pattern_run).predict(astronaut)
    for service in (served, onnx_only):
        with local_client(create_app(service, ServerSettings(api_key=None))) as client:
            (face,) = client.post("/v1/predict", files=upload(astronaut)).json()["faces"]
            assert face["label"] == want.label
            assert face["probs"] == pytest.approx(want.probs, abs=1e-4)
            explained = client.post("/v1/explain", files=upload(astronaut))
            assert explained.status_code == (200 if service is served else 400)
    assert "use its .pt model file (on PyTorch)" in explained.json()["error"]


def test_upload_types_are_told_by_content() -> None:
    assert sniff_image_type(png_bytes(Image.new("L", (4, 4)))) == "image/png"
    for fmt, kind in [("JPEG", "jpeg"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")]:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format=fmt)
        assert sniff_image_type(buffer.getvalue()) == f"image/{kind}"
    assert sniff_image_type(b"GIF89a...") == "image/gif"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_image_type(b"<svg xmlns='...'/>") is None


def test_serve_binds_loopback_by_default(
    pattern_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert main(["serve", "--model", str(pattern_run)]) == 0
    assert (calls[0]["host"], calls[0]["port"]) == ("127.0.0.1", 8000)
    assert isinstance(calls[0]["app"], FastAPI)
    settings = calls[0]["app"].state.settings
    assert (settings.max_upload_bytes, settings.timeout_s) == (10 * 2**20, 30.0)
    assert capsys.readouterr().err == ""
    argv = ["serve", "--model", str(pattern_run), "--host", "0.0.0.0", "--port", "9001"]
    assert main([*argv, "--max-upload-mb", "2", "--timeout", "5"]) == 0
    assert (calls[1]["host"], calls[1]["port"]) == ("0.0.0.0", 9001)
    assert calls[1]["app"].state.settings.max_upload_bytes == 2 * 2**20
    assert "without an API key" in capsys.readouterr().err
    flags = ["--api-key", "k3y", "--allow-origin", "https://App.example/", "--explain-timeout", "9"]
    assert main([*argv, *flags]) == 0
    settings = calls[2]["app"].state.settings
    assert (settings.api_key, settings.host) == ("k3y", "0.0.0.0")
    assert (settings.allow_origins, settings.explain_timeout_s) == (("https://app.example",), 9)
    assert capsys.readouterr().err == ""
    assert main(["serve", "--model", str(pattern_run / "nope")]) == 2
    assert "no such run folder or model file" in capsys.readouterr().err
    for size in ("nan", "inf", "-1", "1e-9"):
        assert main(["serve", "--model", str(pattern_run), "--max-upload-mb", size]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ferlab: error: --max-upload-mb must be a number of MiB above 0, got")
        assert err.count("\n") == 1
    assert main(["serve", "--model", str(pattern_run), "--host", "203.0.113.9"]) == 2
    err = capsys.readouterr().err  # no warning about a server that does not start
    assert err.startswith("ferlab: error: --host 203.0.113.9 --port 8000: cannot listen there")
    for origin in ("app.example", "ftp://app.example", "https://app.example/path", "http://:80"):
        assert main(["serve", "--model", str(pattern_run), "--allow-origin", origin]) == 2
        assert f"ferlab: error: --allow-origin '{origin}': " in capsys.readouterr().err
    assert len(calls) == 3


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but whose data is a 1x1 image's."""
    data = bytearray(png_bytes(Image.new("RGB", (1, 1))))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def test_reduced_images_report_their_own_size(service: ModelService) -> None:
    with local_client(create_app(service, ServerSettings(api_key=None))) as client:
        for size in ((4999, 5861), (20_000, 10)):
            image = png_bytes(Image.new("L", size, 90))
            result = client.post("/v1/predict", files=upload(image)).json()
            assert (result["width"], result["height"]) == size


def test_large_images_decode_reduced_within_the_memory_budget(
    service: ModelService, astronaut: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, ...]] = []
    predict = service.predict

    def recorded(image: np.ndarray, **kwargs: Any) -> list[FaceResult]:
        shapes.append(image.shape)
        return predict(image, **kwargs)

    monkeypatch.setattr(service, "predict", recorded)
    big = io.BytesIO()
    Image.new("L", (6000, 4000), 90).save(big, format="PNG")  # 24 MP in 25 KB
    with local_client(create_app(service, ServerSettings(api_key=None))) as client:
        full = client.post("/v1/predict", files=upload(astronaut)).json()
        response = client.post("/v1/predict", files=upload(big.getvalue()))
        assert response.status_code == 200, response.text
        assert (response.json()["width"], response.json()["height"]) == (6000, 4000)
        assert shapes[-2:] == [(512, 512, 3), (2731, 4096, 3)]
        for width, height in [(9000, 9000), (80_001, 1000)]:
            bomb = client.post("/v1/predict", files=upload(declared_png(width, height)))
            assert bomb.status_code == 413
            assert (
                bomb.json()["error"] == f"image too large: {width}x{height} is over the 80 MP limit"
            )
    reduced = ServerSettings(api_key=None, max_side=200, decode_budget_bytes=2**22)
    with local_client(create_app(service, reduced)) as client:
        response = client.post("/v1/predict", files=upload(astronaut)).json()
        assert shapes[-1] == (200, 200, 3)
        assert (response["width"], response["height"]) == (512, 512)  # boxes in the upload's pixels
        (face,), (want,) = response["faces"], full["faces"]
        assert face["label"] == want["label"]
        assert np.abs(np.subtract(face["box"], want["box"])).max() <= 8
        refused = client.post("/v1/predict", files=upload(big.getvalue()))
        assert refused.status_code == 413
        assert refused.json()["error"] == (
            "image too large: decoding 6000x4000 takes about 23 MiB, over the 4 MiB budget"
        )


def test_reduced_decoding_keeps_colours_and_uses_the_jpeg_scale() -> None:
    palette = Image.new("P", (3000, 1000))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (1500, 0, 3000, 1000))  # left red, right blue
    image = load_image(png_bytes(palette), max_side=300)
    assert image.shape == (100, 300, 3)
    assert image[50, 10].tolist() == [255, 0, 0] and image[50, 290].tolist() == [0, 0, 255]
    jpeg = io.BytesIO()
    Image.new("RGB", (4000, 2000), (0, 128, 0)).save(jpeg, format="JPEG")
    small, full = (decode_cost(jpeg.getvalue(), max_side=side) for side in (500, None))
    assert small.size == full.size == (4000, 2000)
    assert small.peak_bytes < full.peak_bytes / 20  # decoded at 1/8 scale, not in full
    assert load_image(jpeg.getvalue(), max_side=500).shape == (250, 500, 3)


def test_heatmaps_run_one_at_a_time_beside_predictions(
    service: ModelService, astronaut: bytes, blank: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_explain(image: np.ndarray, **kwargs: Any) -> tuple[Explanation, int]:
        started.set()
        release.wait(timeout=30)
        return Explanation(1, "happy", 0.5, None, np.zeros((4, 4, 3), np.uint8)), 1

    monkeypatch.setattr(service, "explain", slow_explain)
    with local_client(create_app(service, ServerSettings(api_key=None))) as client:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(client.post, "/v1/explain?method=scorecam", files=upload(astronaut))
            assert started.wait(timeout=30)
            busy = client.post("/v1/explain", files=upload(astronaut))
            assert (busy.status_code, busy.headers["retry-after"]) == (429, "1")
            assert busy.json() == {
                "error": "too many heatmap jobs asked for at once: try again later"
            }
            for query, message in (("method=foo", "foo"), ("target_class=bored", "bored")):
                never = client.post(f"/v1/explain?{query}", files=upload(astronaut))
                assert never.status_code == 422 and message in never.json()["error"], query
            too_large = client.post("/v1/explain", files=upload(declared_png(10_000, 10_000)))
            assert too_large.status_code == 413
            assert client.get("/healthz").status_code == 200
            assert client.post("/v1/predict", files=upload(blank)).status_code == 200
            release.set()
            assert first.result().status_code == 200
        assert client.post("/v1/explain", files=upload(astronaut)).status_code == 200


def test_memory_budget_waits_refuses_and_shrinks() -> None:
    budget = MemoryBudget(100)
    granted = threading.Event()

    def take_50() -> None:
        with budget.hold(50, timeout=5):
            granted.set()

    with budget.hold(60, timeout=1) as shrink:
        with pytest.raises(TimeoutError), budget.hold(50, timeout=0.05):
            pass
        waiter = threading.Thread(target=take_50)
        waiter.start()
        for _ in range(500):  # until the waiter waits
            if budget._waiting:
                break
            time.sleep(0.01)
        with pytest.raises(MemoryFull), budget.hold(60, timeout=1):
            pass  # 50 bytes already wait: 60 more would wait behind more than the budget
        assert not granted.is_set()
        shrink(10)
        assert granted.wait(timeout=5)  # 10 + 50 fit once shrunk
        waiter.join(timeout=5)
    with budget.hold(100, timeout=0):  # everything handed back
        pass
    with pytest.raises(ValueError, match="101 bytes asked of a 100-byte budget"):
        budget.hold(101, timeout=1).__enter__()


def test_slow_uploads_get_408() -> None:
    sent: list[Message] = []

    async def trickle() -> Message:
        if not sent:
            sent.append({"type": "started"})
            return {"type": "http.request", "body": b"x", "more_body": True}
        await anyio.sleep(30)
        return {"type": "http.disconnect"}

    async def record(message: Message) -> None:
        sent.append(message)

    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application saw a partial body")

    limit = BodyLimit(never_called, max_bytes=100, max_seconds=0.2)
    anyio.run(limit, {"type": "http", "headers": []}, trickle, record)
    assert sent[1]["status"] == 408
    assert json.loads(sent[2]["body"]) == {
        "error": "upload too slow: the body did not arrive within 0.2 s"
    }


def test_bodies_in_progress_share_a_budget() -> None:
    held, sent = anyio.Event(), []
    release = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["body"] == b"x" * 60
        held.set()
        await release.wait()

    def body(size: int) -> Any:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"x" * size, "more_body": False}

        return receive

    async def record(message: Message) -> None:
        sent.append(message)

    limit = BodyLimit(app, max_bytes=80, max_seconds=5, in_flight_bytes=100)
    scope = {"type": "http", "headers": []}

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(limit, scope, body(60), record)
            await held.wait()
            await limit(scope, body(60), record)  # 60 + 60 over the 100 bytes in flight
            assert sent[0]["status"] == 503
            assert (b"retry-after", b"1") in sent[0]["headers"]
            assert (b"connection", b"close") in sent[0]["headers"]
            assert json.loads(sent[1]["body"]) == {
                "error": "the server holds too many uploads at once: try again later"
            }
            release.set()
        assert limit._held == 0
        sent.clear()
        release.set()
        await limit(scope, body(60), record)  # handed back: fits again
        assert sent == []

    anyio.run(main)


def test_the_api_key_is_checked_before_the_body_is_read(
    service: ModelService, blank: bytes
) -> None:
    app = create_app(service, ServerSettings(api_key="s3cret"))
    with local_client(app) as client:
        broken = {"content-type": "multipart/form-data; boundary=x"}
        refused = client.post("/v1/predict", content=b"--x\r\nnot a form", headers=broken)
        assert refused.status_code == 401
        assert refused.headers["connection"] == "close"
        utf8 = client.get("/v1/models", headers={"X-API-Key": "s3cret"})
        assert utf8.status_code == 200
    keyed = create_app(service, ServerSettings(api_key="clé"))
    with local_client(keyed) as client:
        accepted = client.get("/v1/models", headers={"X-API-Key": "clé".encode()})
        assert accepted.status_code == 200
        assert client.get("/v1/models", headers={"X-API-Key": "cle"}).status_code == 401


def test_an_origin_of_another_scheme_is_refused(service: ModelService) -> None:
    with local_client(create_app(service, ServerSettings(api_key=None))) as client:
        assert client.get("/v1/models", headers={"Origin": "http://127.0.0.1:8000"}).is_success
        foreign = client.get("/v1/models", headers={"Origin": "ftp://127.0.0.1:8000"})
        assert foreign.status_code == 403
