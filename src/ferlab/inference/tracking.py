"""Faces across video frames: tracking for stable ids, exponential smoothing per track."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ferlab.errors import ConfigError
from ferlab.inference.motion import Box, BoxMotion


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when either is empty."""
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# Chi-squared with 4 degrees of freedom at 0.95: a detection of a track's face lies this close to
# the box its motion predicts 95% of the time.
GATE = 9.4877


@dataclass
class _Track:
    motion: BoxMotion
    missed: int = 0


class FaceTracker:
    """Gives each face box a track id (1, 2, ...) that it keeps from frame to frame.

    Each track follows its face with a constant-velocity Kalman filter (``BoxMotion``), so that
    its box is predicted on frames without detection and a face that moved between two detected
    frames is found where it went. Each update matches the new boxes to the live tracks by least
    summed distance from the predicted boxes (Hungarian assignment); a pair counts where the box
    lies within the 95% gate of the prediction or overlaps the predicted box by ``min_iou`` or
    more. Unmatched boxes start new tracks; a track unmatched for more than ``max_missed``
    updates in a row ends, and its id is never reused.
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
        self._frame = -1

    @property
    def active(self) -> list[int]:
        """Ids of the tracks still alive (matched, or missed for at most ``max_missed`` updates)."""
        return list(self._tracks)

    def box(self, track: int, frame: int) -> Box:
        """Where live ``track``'s face is expected at ``frame`` (its motion since its last box)."""
        return self._tracks[track].motion.box(frame)

    def update(self, boxes: Sequence[Box], frame: int | None = None) -> list[int]:
        """The track id of each box, in the order given; ``frame``: the index of the frame the
        boxes were found in (default: the frame after the last update's)."""
        frame = self._frame + 1 if frame is None else frame
        self._frame = frame
        ids = list(self._tracks)
        matches: dict[int, int] = {}  # box index -> track id
        if ids and boxes:
            cost = np.array([[self._cost(track, box, frame) for box in boxes] for track in ids])
            for row, col in zip(*linear_sum_assignment(cost), strict=True):
                if cost[row, col] <= GATE:
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
                self._tracks[track_id] = _Track(BoxMotion(box, frame))
            else:
                self._tracks[track_id].motion.correct(box, frame)
                self._tracks[track_id].missed = 0
            assigned.append(track_id)
        return assigned

    def _cost(self, track: int, box: Box, frame: int) -> float:
        """Squared Mahalanobis distance of ``box`` from ``track``'s prediction, at most ``GATE``
        where they overlap by ``min_iou``; above ``GATE``: no match."""
        motion = self._tracks[track].motion
        distance = motion.distance(box, frame)
        if distance > GATE and iou(motion.box(frame), box) >= self.min_iou:
            return GATE
        return min(distance, 2 * GATE)


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
        number = isinstance(seconds, numbers.Real) and not isinstance(seconds, bool)
        if not (number and 0 <= seconds < math.inf):
            raise ConfigError(
                f"smooth (--smooth) must be a number of seconds, at least 0, got {seconds!r}"
            )
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
