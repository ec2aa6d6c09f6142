"""Predictions as text lines, CSV rows or JSON records, for the ``ferlab predict`` command."""

from __future__ import annotations

from typing import Any

from ferlab.inference.results import FaceResult


def text_lines(path: str, faces: list[FaceResult], top_k: int = 3) -> list[str]:
    """``path  face 1 (x1,y1,x2,y2)  happy 0.87  [surprise 0.06, neutral 0.03]`` per face."""
    if not faces:
        return [f"{path}  no face found"]
    lines = []
    for number, face in enumerate(faces, start=1):
        where = (
            "whole image" if face.box is None else f"face {number} ({','.join(map(str, face.box))})"
        )
        best, *others = face.top(max(1, top_k))
        line = f"{path}  {where}  {best[0]} {best[1]:.2f}"
        if others:
            line += "  [" + ", ".join(f"{name} {p:.2f}" for name, p in others) + "]"
        if face.valence is not None and face.arousal is not None:
            line += f"  valence {face.valence:+.2f} arousal {face.arousal:+.2f}"
        lines.append(line)
    return lines


def csv_header(classes: list[str], va: bool = False) -> list[str]:
    """The CSV columns; ``va``: valence and arousal after the class probabilities."""
    columns = ["path", "face", "x1", "y1", "x2", "y2", "detection_score", "label", "score"]
    return [*columns, *classes, *(["valence", "arousal"] if va else [])]


def csv_rows(path: str, faces: list[FaceResult], classes: list[str]) -> list[list[Any]]:
    """One row per face (box columns empty for whole-image predictions); none without faces.
    Faces with valence and arousal get them as the last two cells."""
    rows = []
    for values in face_values(path, faces, classes):
        box, detection, label, score = values[2:6], values[6], values[7], values[8]
        rows.append(
            [
                *values[:2],
                *("" if x is None else x for x in box),
                "" if detection is None else f"{detection:.3f}",
                label,
                f"{score:.4f}",
                *(f"{p:.4f}" for p in values[9:]),
            ]
        )
    return rows


def face_values(path: str, faces: list[FaceResult], classes: list[str]) -> list[list[Any]]:
    """``csv_rows`` unformatted: numbers as they are, None for an empty cell."""
    rows = []
    for number, face in enumerate(faces, start=1):
        box = list(face.box) if face.box is not None else [None] * 4
        probs = [face.probs[name] for name in classes]
        if face.valence is not None and face.arousal is not None:
            probs += [face.valence, face.arousal]
        rows.append([path, number, *box, face.detection_score, face.label, face.score, *probs])
    return rows


def json_record(path: str, faces: list[FaceResult]) -> dict[str, Any]:
    return {"path": path, "faces": [face.to_dict() for face in faces]}
