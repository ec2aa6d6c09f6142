"""Every public Recognizer and result method takes the images ``predict`` takes, or refuses bad
arguments with one clear line: never a silently wrong answer or a raw library error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ferlab import Recognizer
from ferlab.errors import ConfigError, DataError
from ferlab.inference import FaceOptions
from ferlab.inference.annotate import annotate
from ferlab.inference.detect import Face
from ferlab.inference.image_results import ImageResult

BOX = (181, 65, 267, 177)


@pytest.fixture(scope="module")
def shipped() -> Recognizer:
    return Recognizer.load()


@pytest.fixture(scope="module")
def astronaut(photos: Path) -> Path:
    return photos / "astronaut.png"


@pytest.fixture(scope="module")
def rgb(astronaut: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(astronaut))[:, :, ::-1])


def test_find_faces_converts_images_like_predict(
    shipped: Recognizer, astronaut: Path, rgb: np.ndarray
) -> None:
    [face] = shipped.find_faces(rgb)
    assert face.box == BOX
    for image in (rgb / 255.0, rgb.astype(np.uint16) * 257, astronaut, Image.open(astronaut)):
        assert shipped.find_faces(image) == [face]
    with pytest.raises(DataError, match=r"<array>: expected an \(H, W\) or"):
        shipped.find_faces(np.zeros((0, 0, 3), np.uint8))


def test_frame_annotation_is_bgr_uint8_for_every_frame_stream_takes(
    shipped: Recognizer, astronaut: Path, rgb: np.ndarray
) -> None:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    [expected] = [result.annotate() for result in shipped.stream([bgr])]
    [from_rgb] = [result.annotate() for result in shipped.stream([rgb], rgb=True)]
    assert np.array_equal(from_rgb, expected)
    frames = [
        cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
        bgr / 255.0,
        cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
        str(astronaut),
        Image.open(astronaut),
    ]
    for result in shipped.stream(frames):
        drawn = result.annotate()
        assert drawn.shape == bgr.shape and drawn.dtype == np.uint8
        assert len(result.faces) == 1
    [bgra] = [result.annotate() for result in shipped.stream([frames[2]])]
    assert np.array_equal(bgra, expected)


def test_image_annotation_converts_gray_and_float_images(
    shipped: Recognizer, rgb: np.ndarray
) -> None:
    faces = shipped.predict(rgb, rgb=True)
    result = ImageResult.of(None, rgb, faces)
    expected = result.annotate(rgb)
    assert np.array_equal(annotate(rgb / 255.0, faces), expected)
    gray = result.annotate(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert gray.shape == rgb.shape and gray.dtype == np.uint8
    with pytest.raises(DataError, match="float64 pixel values from 0 to 255"):
        annotate(rgb.astype(np.float64), faces)


def test_predict_faces_converts_images_and_checks_faces(
    shipped: Recognizer, astronaut: Path, rgb: np.ndarray
) -> None:
    face = Face(BOX, 0.9)
    [[expected]] = shipped.predict_faces([rgb], [[face]])
    for image in (str(astronaut), rgb / 255.0, rgb.astype(np.uint16) * 257):
        [[found]] = shipped.predict_faces([image], [[face]])
        assert found.label == expected.label and found.score == pytest.approx(expected.score)
    [[found]] = shipped.predict_faces([rgb], [[Face(tuple(np.array(BOX)), 0.9)]])
    assert found.box == BOX and all(type(value) is int for value in found.box)
    with pytest.raises(ConfigError, match=r"image 1: expected ferlab.inference.Face\(box, score"):
        shipped.predict_faces([rgb], [[BOX]])
    with pytest.raises(ConfigError, match=r"image 1: expected a list of Face objects, got Face"):
        shipped.predict_faces([rgb], [face])
    with pytest.raises(ConfigError, match=r"face box \(181\.5, .* in whole pixels"):
        shipped.predict_faces([rgb], [[Face((181.5, 65, 267, 177), 0.9)]])
    with pytest.raises(ConfigError, match="more images than the 1 lists of faces"):
        shipped.predict_faces(iter([rgb, rgb]), iter([[face]]))
    with pytest.raises(ConfigError, match="more lists of faces than the 1 images"):
        shipped.predict_faces(iter([rgb]), iter([[face], [face]]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fps": "30"}, "fps must be a number above 0, got '30'"),
        ({"every": "2"}, r"every \(--every\) must be a whole number >= 1, got '2'"),
        ({"every": 1.5}, r"every \(--every\) must be a whole number >= 1, got 1\.5"),
        ({"every": True}, r"every \(--every\) must be a whole number >= 1, got True"),
        ({"smooth": "a"}, r"smooth \(--smooth\) must be a number of seconds.*got 'a'"),
        ({"frames_per_batch": 2.5}, r"frames_per_batch \(--frames-per-batch\) must be a whole"),
        ({"rgb": "yes"}, "rgb: expected True or False, got 'yes'"),
    ],
)
def test_bad_stream_options_are_config_errors(
    shipped: Recognizer, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        shipped.stream(iter([]), **options)  # type: ignore[arg-type]


def test_stream_takes_numpy_numbers(shipped: Recognizer, rgb: np.ndarray) -> None:
    results = list(shipped.stream([rgb], rgb=True, every=np.int64(2), fps=np.float32(25)))
    assert [len(result.faces) for result in results] == [1]


def test_face_options_take_numpy_numbers_and_refuse_fractional_pixels() -> None:
    options = FaceOptions(min_face=np.int64(30), margin=np.float64(0.2), detect_side=640.0)
    assert options == FaceOptions(min_face=30, margin=0.2, detect_side=640)
    assert type(options.min_face) is int and type(options.margin) is float
    for name in ("min_face", "detect_side"):
        flag = name.replace("_", "-")
        with pytest.raises(ConfigError, match=rf"{name} \(--{flag}\) must be a whole number of"):
            FaceOptions(**{name: 100.5})  # type: ignore[arg-type]


def test_top_k_is_checked_the_same_everywhere(shipped: Recognizer, rgb: np.ndarray) -> None:
    [face] = shipped.predict(rgb, rgb=True)
    assert face.top(np.int64(2)) == face.top(2)
    for bad in ("2", 1.5, True):
        with pytest.raises(TypeError, match="top: k must be a whole number"):
            face.top(bad)  # type: ignore[arg-type]
    result = ImageResult.of(None, rgb, [face])
    for call in (lambda: result.lines(top_k=-1), lambda: result.annotate(rgb, top_k=-1)):
        with pytest.raises(ValueError, match="top_k must be at least 0, got -1"):
            call()
    [frame] = shipped.stream([rgb], rgb=True)
    with pytest.raises(ValueError, match="top_k must be at least 0, got -1"):
        frame.lines(top_k=-1)


def test_a_detector_returning_none_is_named(shipped: Recognizer, rgb: np.ndarray) -> None:
    def nothing(image: np.ndarray) -> None:
        return None

    recognizer = Recognizer(shipped.classifier, detector=nothing)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="face detector 'nothing' returned NoneType"):
        recognizer.predict(rgb, rgb=True)


def test_rgb_flag_must_be_a_bool(shipped: Recognizer, rgb: np.ndarray) -> None:
    for call in (
        lambda: shipped.predict(rgb, rgb="yes"),
        lambda: shipped.predict_many([], rgb=1),
    ):
        with pytest.raises(ConfigError, match="rgb: expected True or False"):
            call()
    assert shipped.predict(rgb, rgb=np.bool_(True))[0].box == BOX


def test_unknown_keywords_list_the_valid_ones(shipped: Recognizer) -> None:
    with pytest.raises(ConfigError, match=r"unknown face option\(s\) device; valid keywords: .*"):
        Recognizer.load(device="cpu")
    with pytest.raises(ConfigError, match="backend, detector, prior_tau, detect, min_face"):
        Recognizer.load(device="cpu")
    with pytest.raises(ConfigError, match="valid keywords: detect, min_face, min_score"):
        FaceOptions().replace(device="cpu")
