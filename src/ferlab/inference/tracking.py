"""Faces across video frames: IoU tracking for stable ids, exponential smoothing per track."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ferlab.errors import ConfigError

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when either is empty."""
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    box: Box
    missed: int = 0


class IoUTracker:
    """Gives each face box a track id (1, 2, ...) that it keeps from frame to frame.

    Each update matches the new boxes to the live tracks' last boxes so that the summed IoU is
    largest (Hungarian assignment); a pair counts only at ``min_iou`` or more. Unmatched boxes
    start new tracks; a track unmatched for more than ``max_missed`` updates in a row ends, and
    its id is never reused.
    """

    def __init__(self, *, min_iou: float = 0.3, max_missed: int = 5) -> None:
        if not 0 < min_iou <= 1 or max_missed < 0:
            raise ConfigError(
                f"need min_iou in (0, 1] and max_missed >= 0, got {min_iou}, {max_missed}"
            )
        self.min_iou = min_iou
        self.max_missed = max_missed
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1

    @property
    def active(self) -> list[int]:
        """Ids of the tracks still alive (matched, or missed for at most ``max_missed`` updates)."""
        return list(self._tracks)

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """The track id of each box, in the order given."""
        ids = list(self._tracks)
        matches: dict[int, int] = {}  # box index -> track id
        if ids and boxes:
            overlap = np.array([[iou(self._tracks[i].box, box) for box in boxes] for i in ids])
            for row, col in zip(*linear_sum_assignment(overlap, maximize=True), strict=True):
                if overlap[row, col] >= self.min_iou:
                    matches[int(col)] = ids[row]
        for track_id in set(ids) - set(matches.values()):
            self._tracks[track_id].missed += 1
            if self._tracks[track_id].missed > self.max_missed:
                del self._tracks[track_id]
        assigned = []
        for col, box in enumerate(boxes):
            track_id = matches.get(col)
            if track_id is None:
                track_id = self._next_id
                self._next_id += 1
            self._tracks[track_id] = _Track(box)
            assigned.append(track_id)
        return assigned


def smoothing_weight(elapsed: float, seconds: float) -> float:
    """How much a new observation counts after ``elapsed`` seconds: ``1 - exp(-elapsed/seconds)``
    (1 when ``seconds`` is 0, i.e. no smoothing)."""
    if seconds <= 0:
        return 1.0
    return 1.0 - math.exp(-max(0.0, elapsed) / seconds)


class ProbabilitySmoother:
    """Exponential moving average of each track's class probabilities over time.

    ``seconds`` is the time constant: after that long, an old estimate weighs 1/e. Because the
    weight follows the time between observations, the smoothing is the same whatever the frame
    rate or how many frames are skipped; 0 turns it off.
    """

    def __init__(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ConfigError(f"smoothing time must be >= 0 seconds, got {seconds}")
        self.seconds = seconds
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, track: int, probs: np.ndarray, time: float) -> np.ndarray:
        """The smoothed probabilities of ``track`` after observing ``probs`` at ``time`` s."""
        previous = self._state.get(track)
        current = np.asarray(probs, dtype=np.float64)
        if previous is not None:
            weight = smoothing_weight(time - previous[1], self.seconds)
            current = previous[0] + weight * (current - previous[0])
        self._state[track] = (current, time)
        return current

    def keep(self, tracks: Iterable[int]) -> None:
        """Forget every track not in ``tracks`` (those the tracker has ended)."""
        alive = set(tracks)
        self._state = {key: value for key, value in self._state.items() if key in alive}
