"""What recognition and explanation give back per face: plain data, free of any runtime."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FaceResult:
    """One face: its box (x1, y1, x2, y2; None for a whole-image prediction) and its expression;
    ``valence`` and ``arousal`` in [-1, 1] from a multi-task model, else None."""

    box: tuple[int, int, int, int] | None
    label: str
    score: float
    probs: dict[str, float]
    detection_score: float | None
    valence: float | None = None
    arousal: float | None = None

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes with their probabilities, most probable first (all of
        them when ``k`` is larger than their number); see :func:`check_top_k`."""
        check_top_k(k, "top: k")
        return sorted(self.probs.items(), key=lambda item: -item[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; ``valence`` and ``arousal`` only where the model predicts them."""
        record = {
            "box": None if self.box is None else list(self.box),
            "label": self.label,
            "score": self.score,
            "probs": dict(self.probs),
            "detection_score": self.detection_score,
        }
        if self.valence is not None and self.arousal is not None:
            record.update(valence=self.valence, arousal=self.arousal)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> FaceResult:
        """The face that ``to_dict`` gave ``record``."""
        box = record["box"]
        return cls(
            box=None if box is None else (box[0], box[1], box[2], box[3]),
            label=record["label"],
            score=record["score"],
            probs=dict(record["probs"]),
            detection_score=record["detection_score"],
            valence=record.get("valence"),
            arousal=record.get("arousal"),
        )


def check_top_k(k: object, name: str = "top_k") -> None:
    """TypeError unless ``k`` (called ``name``) is a whole number; ValueError if it is below 0."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {k!r}")
    if k < 0:
        raise ValueError(f"{name} must be at least 0, got {k!r}")


@dataclass
class Explanation:
    """One face (numbered from 1, left to right): the class explained, its probability (after
    the test-time augmentation ``tta``), the face box (None for a whole image), the heatmap
    overlay, RGB uint8 at the crop's size, and the heatmap itself (h, w) in [0, 1], of one view."""

    face: int
    label: str
    score: float
    box: tuple[int, int, int, int] | None
    overlay: np.ndarray
    heatmap: np.ndarray | None = None
    tta: str = "none"
