"""What recognition gives back per image and per video frame: plain data that gives its own JSON
record, text lines, CSV rows and annotated picture.

Photos and video frames share one CSV schema (``csv_header``): a row per face, or one row with
face 0 and empty cells for an image or frame without a face; the columns that do not apply (a
photo's frame, time, track and raw label) are empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ferlab.inference.results import FaceResult, check_top_k

CSV_COLUMNS = (
    "path",
    "frame",
    "time_s",
    "face",
    "track",
    "x1",
    "y1",
    "x2",
    "y2",
    "detection_score",
    "label",
    "score",
    "raw_label",
)
VA_COLUMNS = ("valence", "arousal")
_DECIMALS = {"time_s": 3, "detection_score": 3}  # other numbers: 4


def csv_header(classes: list[str], va: bool = False) -> list[str]:
    """The columns of a results CSV: ``CSV_COLUMNS``, a probability per class, and with ``va``
    (a multi-task model) valence and arousal."""
    return [*CSV_COLUMNS, *classes, *(VA_COLUMNS if va else ())]


@dataclass
class ImageResult:
    """One image's faces, left to right, and its size in pixels; ``path`` names the image (None:
    an upload, which its JSON record leaves unnamed)."""

    path: str | None
    width: int
    height: int
    faces: list[FaceResult]

    @classmethod
    def of(cls, path: str | None, image: np.ndarray, faces: list[FaceResult]) -> ImageResult:
        """The result of ``faces`` found in ``image`` (an array, height first)."""
        height, width = image.shape[:2]
        return cls(path, width, height, faces)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: path (where there is one), width, height and faces."""
        named = {} if self.path is None else {"path": self.path}
        faces = [face.to_dict() for face in self.faces]
        return {**named, "width": self.width, "height": self.height, "faces": faces}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ImageResult:
        """The result that ``to_dict`` gave ``record``."""
        faces = [FaceResult.from_dict(face) for face in record["faces"]]
        return cls(record.get("path"), record["width"], record["height"], faces)

    def lines(self, top_k: int = 3) -> list[str]:
        """``path  face 1 (x1,y1,x2,y2)  happy 0.87  [surprise 0.06, neutral 0.03]`` per face."""
        check_top_k(top_k)
        name = self.path or "image"
        if not self.faces:
            return [f"{name}  no face found"]
        return [
            _line(name, _where(number, face), face, top_k)
            for number, face in enumerate(self.faces, start=1)
        ]

    def rows(self, classes: list[str], va: bool = False) -> list[list[Any]]:
        """The CSV rows of ``csv_header(classes, va)`` unformatted: numbers as they are, None for
        an empty cell."""
        if not self.faces:
            return [_row({"path": self.path, "face": 0}, None, classes, va)]
        return [
            _row({"path": self.path, **_face_cells(number, face)}, face, classes, va)
            for number, face in enumerate(self.faces, start=1)
        ]

    def csv_rows(self, classes: list[str], va: bool = False) -> list[list[Any]]:
        """The CSV rows of ``csv_header(classes, va)``, numbers formatted."""
        return [_formatted(row) for row in self.rows(classes, va)]

    def annotate(self, image_rgb: np.ndarray, *, top_k: int = 3) -> np.ndarray:
        """A BGR uint8 copy of ``image_rgb`` (an image as ``annotate.annotate`` takes it) with
        each face's box, label and ``top_k`` bars."""
        from ferlab.inference.annotate import annotate

        return annotate(image_rgb, self.faces, top_k=top_k)


@dataclass
class TrackedFace:
    """A face on a track: ``face`` carries the smoothed probabilities, label, score, valence and
    arousal (the rest, box included, as the model gave it); ``raw`` is the model's own result;
    ``detected``: its box was found on this frame, not predicted from its track."""

    track: int
    face: FaceResult
    raw: FaceResult
    detected: bool = True


@dataclass
class FrameResult:
    """One video frame: its index, time in seconds, tracked faces (left to right), the frame
    itself as it was given (not copied), whether faces were detected on it, and ``image``, the
    frame as the RGB uint8 array its faces were found in, for drawing (None: the frame is a BGR
    picture as OpenCV reads it, converted when drawn)."""

    index: int
    time: float
    faces: list[TrackedFace]
    frame: np.ndarray
    detected: bool = True
    image: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: frame index, time and faces, each with its track and raw label."""
        faces = [
            {"track": tracked.track, **tracked.face.to_dict(), "raw_label": tracked.raw.label}
            for tracked in self.faces
        ]
        return {"frame": self.index, "time_s": self.time, "faces": faces}

    def lines(self, top_k: int = 3) -> list[str]:
        """``frame 12 (0.40 s)  face 1 #3 (x1,y1,x2,y2)  happy 0.87  [...]`` per face."""
        check_top_k(top_k)
        name = f"frame {self.index} ({self.time:.2f} s)"
        if not self.faces:
            return [f"{name}  no face found"]
        return [
            _line(name, _where(number, tracked.face, tracked.track), tracked.face, top_k)
            for number, tracked in enumerate(self.faces, start=1)
        ]

    def rows(
        self, classes: list[str], va: bool = False, path: str | None = None
    ) -> list[list[Any]]:
        """The CSV rows of ``csv_header(classes, va)`` unformatted (``path``: the video's name):
        the smoothed label, score and probabilities, the model's own label as ``raw_label``."""
        frame = {"path": path, "frame": self.index, "time_s": self.time}
        if not self.faces:
            return [_row({**frame, "face": 0}, None, classes, va)]
        rows = []
        for number, tracked in enumerate(self.faces, start=1):
            cells = {**frame, **_face_cells(number, tracked.face)}
            cells.update(track=tracked.track, raw_label=tracked.raw.label)
            rows.append(_row(cells, tracked.face, classes, va))
        return rows

    def csv_rows(
        self, classes: list[str], va: bool = False, path: str | None = None
    ) -> list[list[Any]]:
        """The CSV rows of ``csv_header(classes, va)``, numbers formatted."""
        return [_formatted(row) for row in self.rows(classes, va, path)]

    def annotate(self, *, top_k: int = 3) -> np.ndarray:
        """A BGR uint8 copy of the frame with each face's box, track id, smoothed label and bars."""
        from ferlab.inference.annotate import annotate
        from ferlab.inference.images import load_image

        image = load_image(self.frame) if self.image is None else self.image
        faces = [tracked.face for tracked in self.faces]
        tags = [f"#{tracked.track}" for tracked in self.faces]
        return annotate(image, faces, top_k=top_k, tags=tags)


def _where(number: int, face: FaceResult, track: int | None = None) -> str:
    if face.box is None:
        return "whole image" if track is None else f"whole frame #{track}"
    tag = "" if track is None else f" #{track}"
    return f"face {number}{tag} ({','.join(map(str, face.box))})"


def _line(name: str, where: str, face: FaceResult, top_k: int) -> str:
    best, *others = face.top(max(1, top_k))
    line = f"{name}  {where}  {best[0]} {best[1]:.2f}"
    if others:
        line += "  [" + ", ".join(f"{label} {p:.2f}" for label, p in others) + "]"
    if face.valence is not None and face.arousal is not None:
        line += f"  valence {face.valence:+.2f} arousal {face.arousal:+.2f}"
    return line


def _face_cells(number: int, face: FaceResult) -> dict[str, Any]:
    x1, y1, x2, y2 = face.box if face.box is not None else (None,) * 4
    return {
        "face": number,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "detection_score": face.detection_score,
        "label": face.label,
        "score": face.score,
    }


def _row(cells: dict[str, Any], face: FaceResult | None, classes: list[str], va: bool) -> list[Any]:
    """A CSV row: ``cells`` by column name (None where absent), then ``face``'s probabilities
    (and valence and arousal with ``va``), or as many Nones without a face."""
    row = [cells.get(column) for column in CSV_COLUMNS]
    if face is None:
        return row + [None] * (len(classes) + len(VA_COLUMNS) * va)
    row += [face.probs[name] for name in classes]
    return row + ([face.valence, face.arousal] if va else [])


def _formatted(row: list[Any]) -> list[Any]:
    """``row`` for a CSV file: None empty, floats to 4 decimals (time and detection score 3)."""
    decimals = [_DECIMALS.get(column, 4) for column in CSV_COLUMNS]
    decimals += [4] * (len(row) - len(decimals))
    return [
        "" if value is None else f"{value:.{places}f}" if isinstance(value, float) else value
        for value, places in zip(row, decimals, strict=True)
    ]
