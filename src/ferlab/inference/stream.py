"""The frame loop shared by video files and live cameras: detect, classify, track, smooth.

Frames are read a few at a time (``frames_per_batch``) so that their faces share model batches,
and each frame's result is yielded as soon as its chunk is done: a long video never piles up.
With ``every`` N, the model sees frames 0, N, 2N, ...; the frames between repeat the faces of the
last frame it saw (same ids and probabilities) at the boxes their tracks' motion predicts, so
there is still one result per frame.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Generator, Iterable
from typing import Protocol

import numpy as np

from ferlab.errors import ConfigError
from ferlab.inference.image_results import FrameResult, TrackedFace
from ferlab.inference.results import FaceResult
from ferlab.inference.tracking import FaceTracker, ProbabilitySmoother


class FacePredictor(Protocol):
    """What the frame loop needs of a :class:`ferlab.inference.Recognizer`."""

    @property
    def classes(self) -> list[str]: ...

    def predict_many(
        self, sources: Iterable[np.ndarray], *, batch_size: int = 64, rgb: bool = False
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
    rgb: bool = False,
) -> Generator[FrameResult, None, None]:
    """One result per frame of ``frames`` (BGR arrays, or RGB with ``rgb=True``), in order.

    ``smooth``: time constant in seconds of the exponential smoothing of each track's
    probabilities (0: none); ``max_missed``: model frames a track may go undetected and keep its
    id. Arguments are checked at once; frames are read only as results are asked for.
    """
    if not fps > 0 or min(every, batch_size, frames_per_batch) < 1:
        raise ConfigError(
            f"need fps > 0 and every, batch_size, frames_per_batch >= 1, "
            f"got {fps}, {every}, {batch_size}, {frames_per_batch}"
        )
    tracker = FaceTracker(max_missed=max_missed)
    smoother = ProbabilitySmoother(smooth)
    return _loop(
        recognizer, frames, tracker, smoother, fps, every, batch_size, frames_per_batch, rgb
    )


def _loop(
    recognizer: FacePredictor,
    frames: Iterable[np.ndarray],
    tracker: FaceTracker,
    smoother: ProbabilitySmoother,
    fps: float,
    every: int,
    batch_size: int,
    frames_per_batch: int,
    rgb: bool,
) -> Generator[FrameResult, None, None]:
    classes = recognizer.classes
    current: list[TrackedFace] = []
    numbered = enumerate(frames)
    while chunk := list(itertools.islice(numbered, frames_per_batch)):
        seen = [frame for index, frame in chunk if index % every == 0]
        found = iter(recognizer.predict_many(seen, batch_size=batch_size, rgb=rgb))
        for index, frame in chunk:
            time = index / fps
            if index % every == 0:
                faces = next(found)
                height, width = frame.shape[:2]
                boxes = [face.box or (0, 0, width, height) for face in faces]
                tracks = tracker.update(boxes, index)
                smoother.keep(tracker.active)
                current = [
                    TrackedFace(track, _smoothed(face, smoother, track, time, classes), face)
                    for track, face in zip(tracks, faces, strict=True)
                ]
                yield FrameResult(index, time, list(current), frame)
            else:
                moved = _moved(current, tracker, index, frame.shape)
                yield FrameResult(index, time, moved, frame)


def _moved(
    faces: list[TrackedFace], tracker: FaceTracker, index: int, shape: tuple[int, ...]
) -> list[TrackedFace]:
    """``faces`` of the last model frame with the boxes their tracks predict at frame ``index``,
    cut to the frame's ``shape``."""
    moved = []
    for tracked in faces:
        if tracked.face.box is not None:
            x1, y1, x2, y2 = tracker.box(tracked.track, index)
            height, width = shape[:2]
            box = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
            tracked = dataclasses.replace(tracked, face=dataclasses.replace(tracked.face, box=box))
        moved.append(tracked)
    return moved


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
