"""Video and webcam: tracking, smoothing, the lazy frame loop, `ferlab video` and `webcam`.

The end-to-end video is made of FER2013 test faces pasted into 640x480 frames at 10 fps:

- frames 0-19: face A moving right, lit from above;
- frames 20-29: no face;
- frames 30-49: face B on the left, lit from below, and face C on the right, lit from above
  except every 4th frame, when it is lit from below.

The pattern model (``pattern_run``) learned "top half bright: happy, bottom half bright: sad", so
the labels are known: A happy, B sad, C happy with a one-frame flip to sad every 4 frames, which
smoothing should iron out.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import pattern_image
from ferlab.apps.capture import Capture, open_camera, open_video
from ferlab.apps.video import check_video_out, check_video_outputs, process_video
from ferlab.apps.webcam import run_webcam
from ferlab.cli import main
from ferlab.errors import ConfigError, DataError, OutputError
from ferlab.inference import FaceResult, Recognizer
from ferlab.inference.detect import Face
from ferlab.inference.face_options import FaceOptions
from ferlab.inference.image_results import FrameResult, csv_header
from ferlab.inference.stream import stream_results
from ferlab.inference.tracking import FaceTracker, ProbabilitySmoother, iou, smoothing_weight

FPS = 10.0
FACES = {
    "a": "happy/PrivateTest_10513598.png",
    "b": "neutral/PrivateTest_11239107.png",
    "c": "happy/PrivateTest_10613684.png",
}
SEGMENT_A, NO_FACE, SEGMENT_B = range(0, 20), range(20, 30), range(30, 50)


def _lit_face(path: Path, from_above: bool) -> np.ndarray:
    """The 48x48 face at 160 px, BGR, with one half brightened and the other darkened."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    face = cv2.resize(gray, (160, 160), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    bright, dark = (slice(0, 80), slice(80, None))
    if not from_above:
        bright, dark = dark, bright
    face[bright] += 90
    face[dark] -= 40
    return np.repeat(np.clip(face, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _clip_frames(fer2013: Path) -> Iterator[np.ndarray]:
    test = fer2013 / "test"
    a = _lit_face(test / FACES["a"], from_above=True)
    b = _lit_face(test / FACES["b"], from_above=False)
    c_above = _lit_face(test / FACES["c"], from_above=True)
    c_below = _lit_face(test / FACES["c"], from_above=False)
    for index in range(50):
        frame = np.full((480, 640, 3), 128, np.uint8)
        if index in SEGMENT_A:
            x = 100 + 3 * index
            frame[150:310, x : x + 160] = a
        elif index in SEGMENT_B:
            step = index - SEGMENT_B.start
            frame[160:320, 60 + 2 * step : 220 + 2 * step] = b
            frame[140:300, 400 - 2 * step : 560 - 2 * step] = c_below if step % 4 == 3 else c_above
        yield frame


@pytest.fixture(scope="module")
def clip(fer2013_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (640, 480))
    for frame in _clip_frames(fer2013_dir):
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def recognizer(pattern_run: Path) -> Recognizer:
    return Recognizer.load(pattern_run)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _flips(labels: list[str]) -> int:
    return sum(a != b for a, b in itertools.pairwise(labels))


# --- tracking and smoothing ------------------------------------------------------------------


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0


def test_tracker_keeps_ids_of_crossing_and_neighbouring_faces() -> None:
    tracker = FaceTracker()
    # two faces pass each other, one 50 px lower, 10 px per frame each way
    for step in range(30):
        left = (50 + 10 * step, 100, 150 + 10 * step, 200)
        right = (400 - 10 * step, 150, 500 - 10 * step, 250)
        boxes = sorted([left, right])  # given left to right, so their order swaps midway
        ids = dict(zip(boxes, tracker.update(boxes), strict=True))
        assert (ids[left], ids[right]) == (1, 2), step
    neighbours = FaceTracker()  # side by side, 2 px apart, jittering, listed in either order
    assert neighbours.update([(100, 100, 200, 200), (202, 100, 302, 200)]) == [1, 2]
    rng = np.random.default_rng(0)
    for step in range(20):
        dx = rng.integers(-4, 5, 3)
        boxes = [(100 + dx[0], 100 + dx[1], 200, 200), (202 + dx[2], 100, 302, 200)]
        order = 1 if step % 2 else -1
        assert neighbours.update(boxes[::order])[::order] == [1, 2], step


def test_tracker_ends_a_track_after_max_missed_and_never_reuses_ids() -> None:
    tracker = FaceTracker(max_missed=2)
    face = (10, 10, 60, 60)
    assert tracker.update([face]) == [1]
    assert tracker.update([]) == [] and tracker.update([]) == []
    assert tracker.update([face]) == [1]  # missed twice: still track 1
    for _ in range(3):
        tracker.update([])
    assert tracker.active == []
    assert tracker.update([face]) == [2]
    assert tracker.update([(300, 300, 350, 350), face]) == [3, 2]


def test_tracker_follows_a_face_detected_every_5_frames_and_predicts_between() -> None:
    def at(frame: int) -> tuple[int, int, int, int]:  # 20 px a frame: no overlap 5 frames apart
        return (10 + 20 * frame, 100, 110 + 20 * frame, 200)

    tracker = FaceTracker()
    for frame in range(0, 30, 5):
        assert tracker.update([at(frame)], frame) == [1], frame
    assert np.abs(np.subtract(tracker.box(1, 27), at(27))).max() <= 3
    assert tracker.update([(0, 300, 100, 400), at(30)], 30) == [2, 1]  # elsewhere: a new face
    still = FaceTracker()  # a face that stays put is not expected to move
    for frame in range(0, 30, 3):
        assert still.update([(50, 50, 150, 150)], frame) == [1]
    assert still.box(1, 100) == (50, 50, 150, 150)


def test_smoothing_follows_time_not_frames() -> None:
    assert smoothing_weight(0.1, 0) == 1
    assert smoothing_weight(1.0, 1.0) == pytest.approx(1 - 1 / math.e)
    off = ProbabilitySmoother(0)
    off.update(1, np.array([1.0, 0.0]), 0.0)
    assert off.update(1, np.array([0.0, 1.0]), 0.1).tolist() == [0.0, 1.0]
    # a step from [1, 0] to [0, 1]: after one time constant, 1 - 1/e of the way, at any frame rate
    for fps in (10, 30):
        smoother = ProbabilitySmoother(0.5)
        smoother.update(7, np.array([1.0, 0.0]), 0.0)
        for frame in range(1, fps // 2 + 1):
            smoothed = smoother.update(7, np.array([0.0, 1.0]), frame / fps)
        assert smoothed[1] == pytest.approx(1 - 1 / math.e)
        assert smoothed.sum() == pytest.approx(1)
    smoother.keep([])
    assert smoother.update(7, np.array([0.2, 0.8]), 5.0).tolist() == [0.2, 0.8]  # forgotten


# --- the frame loop ---------------------------------------------------------------------------


def test_stream_is_lazy_and_without_detection_classifies_every_frame(
    recognizer: Recognizer,
) -> None:
    pulled = 0

    def endless() -> Iterator[np.ndarray]:
        nonlocal pulled
        rng = np.random.default_rng(0)
        while True:
            pulled += 1
            yield pattern_image(pulled % 3, rng)

    detectless = Recognizer(recognizer.classifier, detect=False)
    results = detectless.stream(endless(), fps=FPS, every=3, smooth=0, frames_per_batch=4)
    first = list(itertools.islice(results, 6))
    assert pulled <= 8
    assert [r.index for r in first] == list(range(6))
    assert [r.time for r in first] == pytest.approx([i / FPS for i in range(6)])
    for result in first:
        expected = detectless.predict(result.frame)[0]
        [tracked] = result.faces
        assert tracked.track == 1 and tracked.face.box is None
        assert tracked.raw.probs == pytest.approx(expected.probs, abs=1e-5)
        assert tracked.face.label == expected.label  # smoothing off


class _ScriptedFaces:
    """A stand-in recognizer whose detector finds the faces ``script`` gives for each frame
    (frames are numbered by their first pixel) and whose classifier calls every face happy."""

    options = FaceOptions()

    def __init__(self, script: dict[int, list[Face]]) -> None:
        self.classes = ["happy", "sad"]
        self.script = script
        self.detected: list[int] = []

    def find_faces(self, image: np.ndarray) -> list[Face]:
        index = int(image[0, 0, 0])
        self.detected.append(index)
        return list(self.script.get(index, []))

    def predict_faces(
        self, images: Iterable[np.ndarray], faces: Iterable[list[Face]], **kwargs: object
    ) -> list[list[FaceResult]]:
        probs = {"happy": 0.8, "sad": 0.2}
        return [
            [FaceResult(face.box, "happy", 0.8, probs, face.score) for face in mine]
            for _, mine in zip(images, faces, strict=True)
        ]


def _numbered_frames(count: int) -> list[np.ndarray]:
    frames = [np.zeros((240, 320, 3), np.uint8) for _ in range(count)]
    for index, frame in enumerate(frames):
        frame[0, 0] = index
    return frames


def _detected_frames(script: dict[int, list[Face]], count: int, every: int) -> list[int]:
    recognizer = _ScriptedFaces(script)
    frames = _numbered_frames(count)
    results = list(stream_results(recognizer, frames, fps=FPS, every=every, max_missed=2))  # type: ignore[arg-type]
    assert [r.index for r in results if r.detected] == recognizer.detected
    return recognizer.detected


def test_detection_comes_sooner_for_new_lost_unsure_and_leaving_faces() -> None:
    still = Face((100, 80, 160, 140), 0.9)
    steady = {i: [still] for i in range(30)}
    # a new face is detected again half-way, then every 5th frame
    assert _detected_frames(steady, 30, 5) == [0, 2, 7, 12, 17, 22, 27]
    # a face gone at frame 11: detection on every frame until its track ends (max_missed 2)
    gone = {i: [still] for i in range(11)}
    assert _detected_frames(gone, 30, 5) == [0, 2, 7, 12, 13, 14, 19, 24, 29]
    # a second face at frame 8 is found at frame 12 and confirmed at 14
    joined = {i: [still] + ([Face((10, 10, 50, 50), 0.9)] if i >= 8 else []) for i in range(30)}
    assert _detected_frames(joined, 30, 5) == [0, 2, 7, 12, 14, 19, 24, 29]
    # a face scored under the sure score keeps the detector on every frame
    unsure = {i: [Face(still.box, 0.65)] for i in range(8)}
    assert _detected_frames(unsure, 8, 5) == list(range(8))
    # a face leaving on the right (gone from frame 8): detected when its predicted box is mostly
    # out of the frame (from frame 10 on), not at the planned frame 12
    leaving = {i: [Face((150 + 15 * i, 80, 210 + 15 * i, 140), 0.9)] for i in range(8)}
    detected = _detected_frames(leaving, 14, 8)
    assert detected[:2] == [0, 4] and detected[2] in (10, 11), detected


def test_ids_stay_and_boxes_follow_between_detections() -> None:
    def at(index: int) -> list[Face]:  # one face moving right, one moving left
        return [
            Face((20 + 6 * index, 40, 80 + 6 * index, 100), 0.9),
            Face((240 - 6 * index, 120, 300 - 6 * index, 180), 0.9),
        ]

    recognizer = _ScriptedFaces({i: at(i) for i in range(25)})
    frames = _numbered_frames(25)
    results = list(stream_results(recognizer, frames, fps=FPS, every=4, smooth=0))  # type: ignore[arg-type]
    assert recognizer.detected == [0, 2, 6, 10, 14, 18, 22]
    for result in results:
        by_track = {tracked.track: tracked for tracked in result.faces}
        assert sorted(by_track) == [1, 2], result.index
        assert all(tracked.detected == result.detected for tracked in result.faces)
        for track, face in zip((1, 2), at(result.index), strict=True):
            box = by_track[track].face.box
            assert box is not None and by_track[track].raw.detection_score == 0.9
            tolerance = 0 if result.detected else 6  # within a frame's move, once speed is known
            if result.index >= 2:
                assert np.abs(np.subtract(box, face.box)).max() <= tolerance, result.index


class _AlternatingVA:
    """A stand-in recognizer: one fixed face per frame whose valence and arousal alternate."""

    va = True
    options = FaceOptions()

    def __init__(self) -> None:
        self.classes = ["happy", "sad"]
        self.calls = 0

    def find_faces(self, image: np.ndarray) -> list[Face]:
        return [Face((10, 10, 60, 60), 0.9)]

    def predict_faces(
        self, images: Iterable[np.ndarray], faces: Iterable[list[Face]], **kwargs: object
    ) -> list[list[FaceResult]]:
        results = []
        for _ in images:
            sign = 1.0 if self.calls % 2 == 0 else -1.0
            self.calls += 1
            probs = {"happy": 0.7, "sad": 0.3}
            results.append([FaceResult((10, 10, 60, 60), "happy", 0.7, probs, 0.9, sign, -sign)])
        return results


def test_stream_smooths_valence_and_arousal_and_the_csv_has_them() -> None:
    frames = [np.zeros((100, 100, 3), np.uint8)] * 4
    recognizer = _AlternatingVA()
    results = list(stream_results(recognizer, frames, fps=FPS, smooth=1.0))  # type: ignore[arg-type]
    raw = [r.faces[0].raw.valence for r in results]
    smoothed = [r.faces[0].face.valence for r in results]
    assert raw == [1.0, -1.0, 1.0, -1.0]
    assert smoothed[0] == 1.0 and all(0 < v < 1 for v in smoothed[1:])
    assert results[1].faces[0].face.arousal == pytest.approx(-smoothed[1])
    header = csv_header(recognizer.classes, va=True)
    [row] = results[1].csv_rows(recognizer.classes, va=True)
    assert header[-2:] == ["valence", "arousal"] and len(row) == len(header)
    assert float(row[-2]) == pytest.approx(smoothed[1], abs=1e-4)
    assert FrameResult(4, 0.4, [], frames[0]).csv_rows(["happy", "sad"], True, "clip.mp4") == [
        ["clip.mp4", 4, "0.400", 0, *[""] * (len(header) - 4)]
    ]


def test_bad_stream_arguments_fail_at_once(recognizer: Recognizer) -> None:
    with pytest.raises(ConfigError, match="fps must be a number above 0, got 0"):
        recognizer.stream(iter([]), fps=0)
    for smooth in (-1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"smooth \(--smooth\) must be a number of sec"):
            recognizer.stream(iter([]), fps=FPS, smooth=smooth)
    with pytest.raises(ConfigError, match=r"every \(--every\) must be at least 1, got 0"):
        recognizer.stream(iter([]), fps=FPS, every=0)
    with pytest.raises(ConfigError, match=r"batch_size \(--batch-size\) must be at least 1"):
        recognizer.stream(iter([]), fps=FPS, batch_size=0)
    with pytest.raises(ConfigError, match="stream takes an iterable of frames, got str"):
        recognizer.stream("clip.mp4", fps=FPS)  # type: ignore[arg-type]


# --- ferlab video -----------------------------------------------------------------------------


def test_cli_video_tracks_segments_and_smoothing_removes_flips(
    clip: Path, pattern_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, smoothed_csv, raw_csv = tmp_path / "out.mp4", tmp_path / "t.csv", tmp_path / "raw.csv"
    common = ["video", str(clip), "--model", str(pattern_run)]
    assert main([*common, "--out", str(out), "--csv", str(smoothed_csv), "--smooth", "1"]) == 0
    printed = capsys.readouterr().out
    assert "50 frames, 640x480, 10 fps" in printed and "frames without a face: 10" in printed
    assert main([*common, "--csv", str(raw_csv), "--smooth", "0"]) == 0

    for table in (raw_csv, smoothed_csv):
        rows = _read_csv(table)
        assert sorted({int(r["frame"]) for r in rows}) == list(range(50))
        by_frame = {i: [r for r in rows if int(r["frame"]) == i] for i in range(50)}
        assert all(len(by_frame[i]) == 1 and by_frame[i][0]["track"] == "" for i in NO_FACE)
        assert {r["track"] for i in SEGMENT_A for r in by_frame[i]} == {"1"}
        assert all(len(by_frame[i]) == 1 for i in SEGMENT_A)
        assert all([r["track"] for r in by_frame[i]] == ["2", "3"] for i in SEGMENT_B)
        assert all(
            int(by_frame[i][0]["x1"]) < int(by_frame[i][1]["x1"]) for i in SEGMENT_B
        )  # track 2 stays the left face
    labels = {
        (name, track): [r["label"] for r in _read_csv(table) if r["track"] == track]
        for name, table in (("raw", raw_csv), ("smooth", smoothed_csv))
        for track in ("1", "2", "3")
    }
    assert labels["smooth", "1"].count("happy") >= 18
    assert labels["smooth", "2"].count("sad") >= 18
    assert labels["smooth", "3"].count("happy") >= 18
    raw_flips, smooth_flips = _flips(labels["raw", "3"]), _flips(labels["smooth", "3"])
    assert raw_flips >= 6, labels["raw", "3"]  # face C's lighting flips the model's label
    assert smooth_flips < raw_flips and smooth_flips <= 1

    video = cv2.VideoCapture(str(out))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 50
    ok, frame = video.read()
    assert ok and frame.shape == (480, 640, 3)
    video.release()
    colourful = frame.max(axis=2).astype(int) - frame.min(axis=2) > 100
    assert colourful.sum() > 500  # the input is gray: box, label panel and bars were drawn
    plot = cv2.imread(str(tmp_path / "t-track3.png"))
    assert plot is not None and plot.shape[1] == 800
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.mp4",
        "raw-track1.png",
        "raw-track2.png",
        "raw-track3.png",
        "raw.csv",
        "t-track1.png",
        "t-track2.png",
        "t-track3.png",
        "t.csv",
    ]


def _write_video(path: Path, frames: Iterable[np.ndarray], fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), FPS, (640, 480))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _write_gif(path: Path, frames: Iterable[np.ndarray], delays_ms: list[int]) -> Path:
    images = [Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=delays_ms, loop=0)
    return path


def test_video_times_follow_the_source_timestamps_at_a_variable_frame_rate(
    clip: Path,
    fer2013_dir: Path,
    pattern_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    faces = list(itertools.islice(_clip_frames(fer2013_dir), 6))  # face A on each
    gif = _write_gif(tmp_path / "phone.gif", faces, [100, 3000, 100, 100, 3000, 100])
    table = tmp_path / "t.csv"
    assert main(["video", str(gif), "--model", str(pattern_run), "--csv", str(table)]) == 0
    rows = _read_csv(table)
    assert [r["time_s"] for r in rows] == ["0.000", "0.100", "3.100", "3.200", "3.300", "6.300"]
    assert "    1       6    0.00-6.30  " in capsys.readouterr().out  # track 1's span
    # a constant frame rate: the timestamps are index / fps, whatever the container or codec
    avi = _write_video(tmp_path / "clip.avi", _clip_frames(fer2013_dir), "MJPG")
    for video in (clip, avi):
        assert (
            main(
                [
                    "video",
                    str(video),
                    "--model",
                    str(pattern_run),
                    "--csv",
                    str(table),
                    "--exist-ok",
                ]
            )
            == 0
        )
        times = {int(r["frame"]): r["time_s"] for r in _read_csv(table)}
        assert times == {i: f"{i / FPS:.3f}" for i in range(50)}, video
    # OpenCV's own MJPEG reader gives the next frame's position: index / fps is kept instead
    own = Capture("clip.avi", cv2.VideoCapture(str(avi), cv2.CAP_OPENCV_MJPEG), FPS, 50)
    assert sum(1 for _ in own.frames()) == 50
    assert [own.time(i) for i in range(50)] == [i / FPS for i in range(50)]


def test_smoothing_follows_the_clock_of_the_frames() -> None:
    frames = [np.zeros((100, 100, 3), np.uint8)] * 4
    times = [0.0, 0.1, 10.1, 10.2]
    results = list(
        stream_results(_AlternatingVA(), frames, fps=FPS, smooth=1.0, clock=times.__getitem__)
    )  # type: ignore[arg-type]
    assert [r.time for r in results] == times
    smoothed = [r.faces[0].face.valence for r in results]
    assert 0 < smoothed[1] < 0.95  # 0.1 s after a valence of 1, the -1 is mostly smoothed away
    assert smoothed[2] == pytest.approx(1.0, abs=1e-3)  # 10 s later the old value is forgotten


def test_cli_video_every_n_classifies_the_tracked_boxes_between_detections(
    clip: Path, pattern_run: Path, tmp_path: Path
) -> None:
    table = tmp_path / "every.csv"
    args = ["video", str(clip), "--model", str(pattern_run), "--every", "4", "--smooth", "0"]
    assert main([*args, "--csv", str(table)]) == 0
    rows = _read_csv(table)
    assert sorted({int(r["frame"]) for r in rows}) == list(range(50))
    assert {r["track"] for r in rows if int(r["frame"]) in SEGMENT_A} == {"1"}
    # faces that come in are found at the next detection, at most 4 frames later
    assert {r["track"] for r in rows if int(r["frame"]) in SEGMENT_B[4:]} == {"2", "3"}
    # face C, lit from below on every 4th frame, is classified on those frames too
    c_labels = {int(r["frame"]): r["label"] for r in rows if r["track"] == "3"}
    flipped = [c_labels[i] for i in SEGMENT_B if (i - SEGMENT_B.start) % 4 == 3]
    assert flipped.count("sad") >= len(flipped) - 1, c_labels
    # between detections, each box moves on as its face does: A and B right, C left
    x1 = {(int(r["frame"]), r["track"]): int(r["x1"]) for r in rows if r["track"]}
    for track, speed, frames in (("1", 3, SEGMENT_A), ("2", 2, SEGMENT_B), ("3", -2, SEGMENT_B)):
        steps = [x1[i + 1, track] - x1[i, track] for i in frames[4:-1]]
        assert np.mean(steps) == pytest.approx(speed, abs=1), (track, steps)


def _sliding_frames(fer2013: Path, speeds: tuple[int, ...], count: int) -> Iterator[np.ndarray]:
    """``count`` 640x480 frames with one 120 px face per row of the frame, each crossing it at
    its speed in pixels per frame (negative: right to left)."""
    test = fer2013 / "test"
    faces = [_lit_face(test / FACES[name], from_above=True) for name in "aca"]
    faces = [cv2.resize(face, (120, 120), interpolation=cv2.INTER_AREA) for face in faces]
    for index in range(count):
        frame = np.full((480, 640, 3), 128, np.uint8)
        for row, (face, speed) in enumerate(zip(faces, speeds, strict=True)):
            x = 10 + speed * index if speed > 0 else 510 + speed * index
            frame[10 + 160 * row : 130 + 160 * row, x : x + 120] = face
        yield frame


@pytest.mark.parametrize("every", [1, 3, 5])
def test_moving_faces_keep_one_track_each_when_the_model_skips_frames(
    every: int, fer2013_dir: Path, pattern_run: Path, tmp_path: Path
) -> None:
    speeds, count = (4, -10, 20), 24  # the fastest moves 100 px, 0.8 face widths, per 5 frames
    clip = tmp_path / "sliding.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (640, 480))
    for frame in _sliding_frames(fer2013_dir, speeds, count):
        writer.write(frame)
    writer.release()
    table = tmp_path / "t.csv"
    args = ["video", str(clip), "--model", str(pattern_run), "--csv", str(table)]
    assert main([*args, "--every", str(every)]) == 0
    rows = _read_csv(table)
    tracks = {r["track"] for r in rows}
    assert len(tracks) == len(speeds), tracks
    for track in tracks:
        mine = [r for r in rows if r["track"] == track]
        assert len(mine) == count  # on every frame
        assert len({(int(r["y1"]) + 10) // 160 for r in mine}) == 1  # always the same face
        centres = [(int(r["x1"]) + int(r["x2"])) / 2 for r in mine]
        row = (int(mine[0]["y1"]) + 10) // 160
        expected = [(10 if speeds[row] > 0 else 510) + speeds[row] * i + 60 for i in range(count)]
        # the box stays on the face, and close to its centre from the third detection on, when
        # its speed is known from detections a few frames apart
        errors = np.abs(np.subtract(centres, expected))
        third = 2 if every == 1 else every + 1
        assert errors.max() < 60 and errors[third:].max() < 30, (every, track, errors)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_several_videos_show_one_bar_counting_them(
    clip: Path, pattern_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    second = tmp_path / "second.mp4"
    second.write_bytes(clip.read_bytes())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    args = ["video", str(broken), str(clip), str(second), "--model", str(pattern_run)]
    assert main([*args, "--out-dir", str(tmp_path / "timelines")]) == 1
    drawn = terminal.getvalue()
    assert "videos (1 failed)" in drawn and "2/3" in drawn, drawn[-2000:]
    assert sorted(p.name for p in (tmp_path / "timelines").glob("*.csv")) == [
        "clip.csv",
        "second.csv",
    ]


def test_cli_video_reports_a_stream_that_broke_off_alone_or_among_several(
    clip: Path,
    fer2013_dir: Path,
    pattern_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    whole = _write_video(
        tmp_path / "whole.avi", itertools.islice(_clip_frames(fer2013_dir), 20), "MJPG"
    )
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    args = ["video", "--model", str(pattern_run), "-q"]
    assert main([*args, str(cut), "--csv", str(tmp_path / "cut.csv")]) == 1
    alone = capsys.readouterr().err
    read = len(_read_csv(tmp_path / "cut.csv"))
    assert 0 < read < 20
    line = (
        f"ferlab: error: {cut}: the stream broke off: {read} of 20 declared frames read "
        "(the outputs hold those)\n"
    )
    assert alone == line
    assert main([*args, str(clip), str(cut), "--out-dir", str(tmp_path / "od")]) == 1
    assert capsys.readouterr().err == line
    assert len(_read_csv(tmp_path / "od" / "cut.csv")) == read
    assert len({r["frame"] for r in _read_csv(tmp_path / "od" / "clip.csv")}) == 50


def test_cli_video_with_exist_ok_removes_the_plots_of_tracks_the_new_run_has_not(
    clip: Path, fer2013_dir: Path, pattern_run: Path, tmp_path: Path
) -> None:
    one_face = _write_video(tmp_path / "one.mp4", itertools.islice(_clip_frames(fer2013_dir), 10))
    table = tmp_path / "out" / "t.csv"
    args = ["video", "--model", str(pattern_run), "--csv", str(table), "--exist-ok", "-q"]
    assert main([*args, str(clip)]) == 0
    plots = ["t-track1.png", "t-track2.png", "t-track3.png"]
    assert sorted(p.name for p in table.parent.iterdir()) == [*plots, "t.csv"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert main([*args, str(broken)]) == 2  # a failed run keeps the earlier outputs
    assert sorted(p.name for p in table.parent.iterdir()) == [*plots, "t.csv"]
    assert main([*args, str(one_face)]) == 0
    assert sorted(p.name for p in table.parent.iterdir()) == ["t-track1.png", "t.csv"]
    assert {r["track"] for r in _read_csv(table)} == {"1"}


def test_cli_video_failures_leave_no_folder_they_made(
    fer2013_dir: Path, pattern_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = _write_video(tmp_path / "v.mp4", itertools.islice(_clip_frames(fer2013_dir), 3))
    empty = _write_video(tmp_path / "empty.avi", [], "MJPG")
    kept = tmp_path / "kept"
    kept.mkdir()
    table = kept / "new" / "deeper" / "t.csv"
    args = ["video", "--model", str(pattern_run), "--csv", str(table), "-q"]
    for extra, problem in (
        (["--every", "0"], "every (--every) must be at least 1, got 0"),
        (["--smooth", "-1"], "smooth (--smooth) must be a number of seconds, at least 0, got -1.0"),
        (["--batch-size", "0"], "batch_size (--batch-size) must be at least 1, got 0"),
        (["--seconds", "inf"], "--seconds must be a finite number above 0, got inf"),
        (["--seconds", "nan"], "--seconds must be a finite number above 0, got nan"),
    ):
        assert main([*args, str(video), *extra]) == 2
        assert capsys.readouterr().err == f"ferlab: error: {problem}\n"
        assert list(kept.iterdir()) == []
    assert main([*args, str(empty)]) == 2
    assert capsys.readouterr().err == f"ferlab: error: {empty}: no frame could be decoded\n"
    assert list(kept.iterdir()) == []
    # more seconds than any video has: the whole video
    assert main([*args, str(video), "--seconds", "1e308"]) == 0
    assert sorted({int(r["frame"]) for r in _read_csv(table)}) == [0, 1, 2]


def test_cli_video_out_dir_that_is_a_file_fails_before_the_model_loads(
    clip: Path, recognizer: Recognizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("notes\n")
    missing_model = tmp_path / "no-such-run"
    args = ["video", str(clip), str(clip.with_name("other.mp4")), "--model", str(missing_model)]
    clip.with_name("other.mp4").write_bytes(clip.read_bytes())
    assert main([*args, "--out-dir", str(afile)]) == 2
    assert capsys.readouterr().err == f"ferlab: error: {afile}: not a folder\n"
    with pytest.raises(OutputError, match=f"^{afile}: file exists$"):
        process_video(recognizer, open_video(clip), csv_path=afile / "t.csv")
    assert afile.read_text() == "notes\n"


def test_interrupted_video_leaves_no_files(
    clip: Path, recognizer: Recognizer, tmp_path: Path
) -> None:
    def stop(result: FrameResult) -> None:
        if result.index == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_video(
            recognizer,
            open_video(clip),
            out=tmp_path / "a.mp4",
            csv_path=tmp_path / "a.csv",
            on_frame=stop,
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_video_unreadable_inputs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    for source, problem in (
        (text, "not a video OpenCV can decode"),
        (tmp_path / "missing.mp4", "no such file"),
    ):
        assert main(["video", str(source), "--csv", str(tmp_path / "t.csv")]) == 2
        err = capsys.readouterr().err
        assert err == f"ferlab: error: {source}: {problem}\n"
    assert main(["video", str(text), "--out", str(tmp_path / "o.gif")]) == 2
    assert "o.gif: cannot write this video type" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_cli_video_refuses_outputs_that_collide_or_would_write_over_earlier_plots(
    clip: Path, pattern_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["video", str(clip), "--model", str(pattern_run), "-q"]
    same = tmp_path / "same.mp4"
    assert main([*args, "--csv", str(same), "--out", str(same)]) == 2
    assert capsys.readouterr().err == (
        f"ferlab: error: {same}: the timeline is a CSV file; give a name ending in .csv\n"
    )
    with pytest.raises(ConfigError, match="the timeline is a CSV file"):
        check_video_outputs(None, tmp_path / "t.txt")
    notes = tmp_path / "report-track1.png"
    notes.write_text("my notes\n")
    assert main([*args, "--csv", str(tmp_path / "report.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"ferlab: error: {notes}: already exists; give --exist-ok to write over it\n"
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report-track1.png"]
    assert main([*args, "--csv", str(tmp_path / "report.csv"), "--exist-ok"]) == 0
    assert cv2.imread(str(notes)) is not None
    capsys.readouterr()
    for flag, name in (("--csv", "d.csv"), ("--out", "d.mp4")):
        (tmp_path / name).mkdir()
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main([*args, flag, str(tmp_path / name), "--exist-ok"]) == 2
        assert capsys.readouterr().err == (
            f"ferlab: error: {tmp_path / name}: a folder, not a file; name the file to write\n"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_video_names_that_are_not_utf8_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4"))
    odd.write_bytes(b"not a video")
    assert main(["video", str(odd), "--csv", str(tmp_path / "t.csv")]) == 2
    assert capsys.readouterr().err == (
        f"ferlab: error: {tmp_path}/caf\\xe9.mp4: OpenCV cannot open a video whose file name is "
        "not valid UTF-8; rename it\n"
    )
    with pytest.raises(DataError, match="not valid UTF-8"):
        check_video_out(odd)
    assert [p.name for p in tmp_path.iterdir()] == [odd.name]


# --- ferlab webcam ----------------------------------------------------------------------------


def test_cli_webcam_without_a_display_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["webcam", "--camera", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ferlab: error: no display to show the webcam window on")
    assert "ferlab video" in err and err.count("\n") == 1

    def no_gui(*args: object) -> None:
        raise cv2.error("The function is not implemented")

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    assert main(["webcam"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ferlab: error: this OpenCV cannot open windows")
    assert "pip install 'ferlab[gui]'" in err and "ferlab video --camera 0" in err
    assert err.count("\n") == 1


def test_webcam_loop_shows_annotated_frames_until_q(
    clip: Path, recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[np.ndarray] = []
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(shown) == 5 else -1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda name, prop: 1.0)
    monkeypatch.setattr(cv2, "destroyWindow", lambda name: None)
    camera = open_video(clip)  # a file stands in for the camera
    assert run_webcam(recognizer, camera, smooth=0.5) == 5
    assert len(shown) == 5 and all(image.shape == (480, 640, 3) for image in shown)
    assert not camera.capture.isOpened()


def test_a_camera_that_does_not_open_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot open it"):
        open_camera(str(tmp_path / "no-such-camera"))


class _FakeCamera:
    """cv2.VideoCapture's interface over generated frames: camera 0 at 10 fps, which may send
    itself a Ctrl-C (SIGINT) when it gives frame ``interrupt_at``."""

    def __init__(self, source: object, frames: Iterator[np.ndarray], interrupt_at: int = -1):
        self.source, self.frames, self.interrupt_at = source, frames, interrupt_at
        self.given = 0
        self.open = source == 0

    def isOpened(self) -> bool:
        return self.open

    def get(self, prop: int) -> float:
        return FPS if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        frame = next(self.frames, None)
        if self.given == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
        self.given += 1
        return frame is not None, frame

    def release(self) -> None:
        self.open = False


def _no_windows(*args: object) -> None:
    raise AssertionError("a camera recording opened a window")


@pytest.mark.parametrize("interrupt_at", [-1, 12])
def test_cli_video_records_a_camera_without_a_window(
    interrupt_at: int,
    fer2013_dir: Path,
    pattern_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reader = cv2.VideoCapture  # for reading the recording back
    endless = itertools.cycle(list(_sliding_frames(fer2013_dir, (4, -10, 20), 24)))
    cameras: list[_FakeCamera] = []

    def open_fake(source: object) -> _FakeCamera:
        cameras.append(_FakeCamera(source, endless, interrupt_at))
        return cameras[-1]

    monkeypatch.setattr(cv2, "VideoCapture", open_fake)
    for gui in ("namedWindow", "imshow", "waitKey"):
        monkeypatch.setattr(cv2, gui, _no_windows)
    out, table = tmp_path / "rec.mp4", tmp_path / "rec.csv"
    args = ["video", "--camera", "0", "--out", str(out), "--csv", str(table), "--every", "3"]
    assert main([*args, "--seconds", "2", "--model", str(pattern_run)]) == 0
    recorded = 20 if interrupt_at < 0 else interrupt_at + 1  # 2 s at 10 fps, or up to Ctrl-C
    printed = capsys.readouterr().out
    assert f"camera 0: {recorded} frames, 640x480, 10 fps" in printed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back
    assert not cameras[0].open
    rows = _read_csv(table)
    assert sorted({int(r["frame"]) for r in rows}) == list(range(recorded))
    assert len({r["track"] for r in rows}) == 3
    video = reader(str(out))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == recorded
    video.release()
    assert main(["video", "--camera", "1", "--csv", str(tmp_path / "other.csv")]) == 2
    assert (
        capsys.readouterr().err
        == "ferlab: error: camera 1: cannot open it (no such device, or busy)\n"
    )
    assert main(["video", "--camera", "0", "--seconds", "0"]) == 2
    assert "--seconds must be a finite number above 0, got 0" in capsys.readouterr().err
