"""A constant-velocity Kalman filter of a face box, in frame units, for tracking between detections.

The state is the box's centre, width and height and their velocities per frame. Noise scales with
the box height: detections are taken to be off by about 1/20 of it (as in ByteTrack), and a new
box's velocity is unknown up to about 1/8 of its height per frame (3 standard deviations: a face
crossing a 30 fps frame, 10 face heights wide, in under a second), so a fast face is still matched
to its track when the detector runs only every few frames.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]

_MEASURED = 1 / 20  # detection error, x box height
_WANDER = 1 / 100  # change of position per frame beyond the velocity, x box height
_DRIFT = 1 / 160  # change of velocity per frame, x box height
_FIRST_SPEED = 1 / 8  # a new box's velocity uncertainty per frame, x box height
_H = np.hstack([np.eye(4), np.zeros((4, 4))])  # the detector sees centre, width and height


def _measurement(box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=np.float64)


class BoxMotion:
    """A box's position and velocity after the detections seen so far, with their uncertainty."""

    def __init__(self, box: Box, frame: int) -> None:
        self.frame = frame
        self.state = np.concatenate([_measurement(box), np.zeros(4)])
        height = self.state[3]
        spread = np.r_[np.full(4, 2 * _MEASURED), np.full(4, _FIRST_SPEED)] * height
        self.covariance = np.diag(spread**2)

    def predicted(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """State and covariance at ``frame`` (no later detection taken into account)."""
        steps = max(0, frame - self.frame)
        move = np.eye(8)
        move[:4, 4:] = steps * np.eye(4)
        height = max(1.0, self.state[3])
        noise = np.r_[np.full(4, _WANDER), np.full(4, _DRIFT)] * height
        state = move @ self.state
        covariance = move @ self.covariance @ move.T + steps * np.diag(noise**2)
        return state, covariance

    def box(self, frame: int) -> Box:
        """The box expected at ``frame``."""
        cx, cy, width, height = self.predicted(frame)[0][:4]
        return (
            round(cx - width / 2),
            round(cy - height / 2),
            round(cx + width / 2),
            round(cy + height / 2),
        )

    def distance(self, box: Box, frame: int) -> float:
        """Squared Mahalanobis distance of ``box`` from the box expected at ``frame``: about
        chi-squared with 4 degrees of freedom for a detection of this face."""
        _, _, residual, spread = self._innovation(box, frame)
        return float(residual @ np.linalg.solve(spread, residual))

    def correct(self, box: Box, frame: int) -> None:
        """Take in ``box``, detected at ``frame``."""
        state, covariance, residual, spread = self._innovation(box, frame)
        gain = np.linalg.solve(spread, _H @ covariance).T
        self.state = state + gain @ residual
        self.covariance = (np.eye(8) - gain @ _H) @ covariance
        self.frame = frame

    def _innovation(
        self, box: Box, frame: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """State and covariance at ``frame``, and ``box``'s residual and its covariance."""
        state, covariance = self.predicted(frame)
        detection_noise = np.diag(np.full(4, _MEASURED * max(1.0, state[3])) ** 2)
        spread = _H @ covariance @ _H.T + detection_noise
        return state, covariance, _measurement(box) - _H @ state, spread
