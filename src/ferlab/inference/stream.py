"""The frame loop shared by video files and live cameras: detect, track, classify, smooth.

Frames are read a few at a time (``frames_per_batch``) so that their faces share model batches,
and each frame's result is yielded as soon as its chunk is done: a long video never piles up.
With ``every`` N, faces are detected every N frames at most; on the frames between, each face
found at the last detection is classified at the box its track's motion predicts. Detection
comes sooner where the last one left doubt: on the very next frame after a live track went
unfound (lost: found again, or ended after ``max_missed`` detections) or a face scored under
``sure_score``; half-way (N // 2 frames on) after a new track appeared, to confirm it and learn
its speed over more than one frame; and at once when a predicted box has mostly left the frame.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ferlab.errors import ConfigError
from ferlab.inference.detect import Face
from ferlab.inference.face_options import FaceOptions
from ferlab.inference.image_results import FrameResult, TrackedFace
from ferlab.inference.images import check_rgb, load_image
from ferlab.inference.motion import Box
from ferlab.inference.results import FaceResult
from ferlab.inference.tracking import FaceTracker, ProbabilitySmoother

# A detection scored under this leaves the face in doubt: detect again on the next frame.
SURE_SCORE = 0.75
# A predicted box with less of its area inside the frame has left it: detect on this frame.
INSIDE = 0.5


class FacePredictor(Protocol):
    """What the frame loop needs of a :class:`ferlab.inference.Recognizer`."""

    @property
    def classes(self) -> list[str]: ...

    @property
    def options(self) -> FaceOptions: ...

    def find_faces(self, image_rgb: np.ndarray) -> list[Face]: ...

    def predict_faces(
        self,
        images_rgb: Iterable[np.ndarray],
        faces: Iterable[Sequence[Face]],
        *,
        batch_size: int = 64,
    ) -> list[list[FaceResult]]: ...


def stream_results(
    recognizer: FacePredictor,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    every: int = 1,
    smooth: float = 0.5,
    batch_size: int = 64,
    frames_per_batch: int = 8,
    max_missed: int = 5,
    sure_score: float = SURE_SCORE,
    rgb: bool = False,
    clock: Callable[[int], float] | None = None,
) -> Generator[FrameResult, None, None]:
    """One result per frame of ``frames`` (BGR arrays, or RGB with ``rgb=True``), in order.

    ``every``: frames from one planned detection to the next; ``smooth``: time constant in
    seconds of the exponential smoothing of each track's probabilities (0: none);
    ``max_missed``: detections a track may go unfound and keep its id; ``sure_score``:
    detection score under which the next frame is detected too; ``clock``: the time in seconds
    of frame ``index``, asked once the frame is read (default: ``index / fps``), e.g. a
    :class:`ferlab.apps.capture.Capture`'s ``time``, which follows a variable frame rate.
    Arguments are checked at once; frames are read only as results are asked for.
    """
    if not (_is_number(fps) and 0 < fps < math.inf):
        raise ConfigError(f"fps must be a number above 0, got {fps!r}")
    check_stream_options(every, smooth, batch_size, frames_per_batch)
    check_rgb(rgb)
    smoother = ProbabilitySmoother(smooth)
    schedule = _Schedule(recognizer, FaceTracker(max_missed=max_missed), every, sure_score)
    timing = clock if clock is not None else lambda index: index / fps
    return _loop(recognizer, frames, schedule, smoother, timing, batch_size, frames_per_batch, rgb)


def check_stream_options(
    every: int, smooth: float, batch_size: int, frames_per_batch: int = 8
) -> None:
    """Raise ConfigError naming the first of ``stream_results``'s options that is out of range."""
    counts = {"every": every, "batch_size": batch_size, "frames_per_batch": frames_per_batch}
    for name, value in counts.items():
        flag = name.replace("_", "-")
        if not (_is_number(value) and isinstance(value, numbers.Integral)):
            raise ConfigError(f"{name} (--{flag}) must be a whole number >= 1, got {value!r}")
        if value < 1:
            raise ConfigError(f"{name} (--{flag}) must be at least 1, got {value!r}")
    ProbabilitySmoother(smooth)  # raises for a smooth out of range


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class _Planned:
    """A frame before classification: its RGB image, faces (boxes found or predicted), their
    tracks, whether they were detected, and the live tracks after it."""

    index: int
    frame: np.ndarray
    image: np.ndarray
    faces: list[Face]
    tracks: list[int]
    detected: bool
    alive: list[int]


class _Schedule:
    """Which frames get detection, and the tracked faces of the frames that do not."""

    def __init__(
        self, recognizer: FacePredictor, tracker: FaceTracker, every: int, sure_score: float
    ) -> None:
        self.recognizer = recognizer
        self.tracker = tracker
        self.every = every
        self.sure_score = sure_score
        self.next = 0  # the frame of the next detection
        self.shown: dict[int, Face] = {}  # track -> its face at the last detection

    def plan(self, index: int, frame: np.ndarray, image: np.ndarray) -> _Planned:
        height, width = image.shape[:2]
        if not self.recognizer.options.detect:
            [track] = self.tracker.update([(0, 0, width, height)], index)
            return _Planned(index, frame, image, [], [track], True, self.tracker.active)
        if index >= self.next:
            return self._detected(index, frame, image)
        faces, tracks = [], []
        for track, face in self.shown.items():
            box = _inside(self.tracker.box(track, index), width, height)
            if box is None:
                return self._detected(index, frame, image)
            faces.append(Face(box, face.score))
            tracks.append(track)
        return _Planned(index, frame, image, faces, tracks, False, self.tracker.active)

    def _detected(self, index: int, frame: np.ndarray, image: np.ndarray) -> _Planned:
        faces = self.recognizer.find_faces(image)
        tracks = self.tracker.update([face.box for face in faces], index)
        alive = self.tracker.active
        new = not set(tracks) <= set(self.shown)
        lost = len(alive) > len(tracks)
        unsure = any(face.score < self.sure_score for face in faces)
        gap = 1 if lost or unsure else max(1, self.every // 2) if new else self.every
        self.next = index + gap
        self.shown = dict(zip(tracks, faces, strict=True))
        return _Planned(index, frame, image, faces, tracks, True, alive)


def _inside(box: Box, width: int, height: int) -> Box | None:
    """``box`` cut to the frame, or None where less than ``INSIDE`` of it lies in the frame."""
    x1, y1, x2, y2 = box
    cut = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
    area = max(0, x2 - x1) * max(0, y2 - y1)
    kept = max(0, cut[2] - cut[0]) * max(0, cut[3] - cut[1])
    return cut if area > 0 and kept >= INSIDE * area else None


def _loop(
    recognizer: FacePredictor,
    frames: Iterable[np.ndarray],
    schedule: _Schedule,
    smoother: ProbabilitySmoother,
    clock: Callable[[int], float],
    batch_size: int,
    frames_per_batch: int,
    rgb: bool,
) -> Generator[FrameResult, None, None]:
    classes = recognizer.classes
    numbered = enumerate(frames)
    while chunk := list(itertools.islice(numbered, frames_per_batch)):
        planned = [
            schedule.plan(index, frame, load_image(frame, rgb=rgb)) for index, frame in chunk
        ]
        found = recognizer.predict_faces(
            (plan.image for plan in planned),
            (plan.faces for plan in planned),
            batch_size=batch_size,
        )
        for plan, faces in zip(planned, found, strict=True):
            time = clock(plan.index)
            smoother.keep(plan.alive)
            tracked = [
                TrackedFace(
                    track, _smoothed(face, smoother, track, time, classes), face, plan.detected
                )
                for track, face in zip(plan.tracks, faces, strict=True)
            ]
            tracked.sort(key=lambda item: item.face.box or (0, 0, 0, 0))
            yield FrameResult(plan.index, time, tracked, plan.frame, plan.detected, plan.image)


def _smoothed(
    face: FaceResult, smoother: ProbabilitySmoother, track: int, time: float, classes: list[str]
) -> FaceResult:
    """``face`` with its track's smoothed probabilities, label and score (and valence and arousal,
    where the model gives them)."""
    values = [face.probs[name] for name in classes]
    has_va = face.valence is not None and face.arousal is not None
    if has_va:
        values += [face.valence, face.arousal]
    smoothed = smoother.update(track, np.array(values, dtype=np.float64), time)
    probs = smoothed[: len(classes)]
    best = int(np.argmax(probs))
    va = {"valence": float(smoothed[-2]), "arousal": float(smoothed[-1])} if has_va else {}
    return dataclasses.replace(
        face,
        label=classes[best],
        score=float(probs[best]),
        probs={name: float(p) for name, p in zip(classes, probs, strict=True)},
        **va,
    )
