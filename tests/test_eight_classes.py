"""An 8-class model (FER+'s classes, contempt included) through everything that shows classes:
predict's JSON and CSV, annotated images, video timelines, the web service and the report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import make_pattern_tree, save_random_model
from ferlab import Recognizer, evaluate
from ferlab.apps.capture import open_video
from ferlab.apps.server import ServerSettings, create_app
from ferlab.apps.service import ModelService
from ferlab.apps.video import process_video
from ferlab.cli import main
from ferlab.inference.annotate import annotate, write_annotated
from ferlab.inference.images import load_image

FERPLUS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("ferplus") / "model.pt", FERPLUS)


def test_predict_json_csv_and_annotation_carry_eight_classes(
    model: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(photos / "astronaut.png")
    assert main(["predict", photo, "--model", str(model), "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert list(record["faces"][0]["probs"]) == list(FERPLUS)
    assert main(["predict", photo, "--model", str(model), "--csv"]) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert all(name in " ".join(header) for name in FERPLUS)
    faces = Recognizer.load(model).predict(photo)
    out = write_annotated(tmp_path / "a.png", annotate(load_image(photo, rgb=True), faces, top_k=8))
    assert Image.open(out).size == Image.open(photo).size


def test_video_timeline_has_a_column_per_class(model: Path, photos: Path, tmp_path: Path) -> None:
    frame = cv2.resize(cv2.imread(str(photos / "astronaut.png")), (320, 320))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    for _ in range(5):
        writer.write(frame)
    writer.release()
    summary = process_video(
        Recognizer.load(model), open_video(clip), out=None, csv_path=tmp_path / "t.csv"
    )
    assert summary.frames == 5
    with (tmp_path / "t.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    assert all(any(name in column for column in rows[0]) for name in FERPLUS)


def test_service_and_report_with_eight_classes(model: Path, photos: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    settings = ServerSettings(max_upload_bytes=2**22, timeout_s=60, api_key=None, explain_queue=2)
    app = create_app(ModelService.load(model), settings)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/v1/models").json()["models"][0]["classes"] == list(FERPLUS)
        data = (photos / "astronaut.png").read_bytes()
        reply = client.post("/v1/predict", files={"file": ("a.png", data, "image/png")})
        assert reply.status_code == 200
        assert list(reply.json()["faces"][0]["probs"]) == list(FERPLUS)
    tree = make_pattern_tree(tmp_path / "data", {"train": 2, "val": 2, "test": 3})
    result = evaluate(model, tree, keep="happy,sad,surprise", out=tmp_path / "eval")
    assert result.metrics["classes"] == ["happy", "sad", "surprise"]
    assert result.metrics["unscored_model_classes"] == [
        "angry",
        "disgust",
        "fear",
        "neutral",
        "contempt",
    ]
    assert np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "eval" / "report.html").is_file()
