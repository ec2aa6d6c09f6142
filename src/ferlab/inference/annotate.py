"""Draw predictions on an image with OpenCV: box, label and score, probability bars per face, and
valence and arousal where the model predicts them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ferlab.errors import DataError
from ferlab.inference.recognizer import FaceResult
from ferlab.outputs import write_atomic

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_PANEL = (30, 30, 30)
_PALETTE = [  # BGR, by class index
    (60, 60, 230),
    (60, 160, 60),
    (170, 60, 170),
    (40, 200, 250),
    (200, 120, 40),
    (230, 200, 60),
    (160, 160, 160),
]


def annotate(image_rgb: np.ndarray, faces: list[FaceResult], *, top_k: int = 3) -> np.ndarray:
    """A BGR copy of ``image_rgb`` with each face's box, a panel with its label and score, bars
    for its ``top_k`` classes and a valence/arousal row where the face has them; a whole-image
    prediction (no box) gets only the panel."""
    canvas = np.ascontiguousarray(image_rgb[:, :, ::-1])
    scale = max(0.4, min(canvas.shape[:2]) / 900)
    for face in faces:
        classes = list(face.probs)
        colour = _PALETTE[classes.index(face.label) % len(_PALETTE)]
        if face.box is not None:
            x1, y1, x2, y2 = face.box
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, max(1, round(2 * scale)))
        _panel(canvas, face, classes, top_k, scale)
    return canvas


def _panel(
    canvas: np.ndarray, face: FaceResult, classes: list[str], top_k: int, scale: float
) -> None:
    """Label row and bars below the box, or above it where the image ends, inside the image."""
    title = f"{face.label} {face.score:.2f}"
    (title_w, text_h), _ = cv2.getTextSize(title, _FONT, scale, 1)
    row = text_h + max(4, round(8 * scale))
    bar = round(60 * scale)
    small = scale * 0.7
    names_w = max(cv2.getTextSize(f"{n} 0.00", _FONT, small, 1)[0][0] for n in classes)
    width = max(title_w, bar + names_w + 6) + 6
    top = face.top(top_k)
    va_text = None
    if face.valence is not None and face.arousal is not None:
        va_text = f"V {face.valence:+.2f} A {face.arousal:+.2f}"
        width = max(width, cv2.getTextSize(va_text, _FONT, small, 1)[0][0] + 12)
    height = row * (1 + len(top) + (va_text is not None)) + 4
    rows, cols = canvas.shape[:2]
    x1, y1, _, y2 = face.box if face.box is not None else (0, 0, 0, 0)
    x = min(max(0, x1), max(0, cols - width))
    y = y2 + 2 if y2 + 2 + height <= rows else max(0, y1 - height - 2)
    cv2.rectangle(canvas, (x, y), (x + width, y + height), _PANEL, cv2.FILLED)
    colour = _PALETTE[classes.index(face.label) % len(_PALETTE)]
    cv2.rectangle(canvas, (x, y), (x + width, y + row), colour, cv2.FILLED)
    cv2.putText(canvas, title, (x + 3, y + text_h + 2), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
    for i, (name, prob) in enumerate(top, start=1):
        top_y = y + i * row + 2
        tint = _PALETTE[classes.index(name) % len(_PALETTE)]
        cv2.rectangle(canvas, (x + 3, top_y), (x + 3 + bar, top_y + row - 4), (70, 70, 70), -1)
        cv2.rectangle(
            canvas, (x + 3, top_y), (x + 3 + round(bar * prob), top_y + row - 4), tint, -1
        )
        label = f"{name} {prob:.2f}"
        origin = (x + bar + 8, top_y + row - 6)
        cv2.putText(canvas, label, origin, _FONT, small, _WHITE, 1, cv2.LINE_AA)
    if va_text is not None:
        origin = (x + 3, y + (len(top) + 2) * row - 4)
        cv2.putText(canvas, va_text, origin, _FONT, small, _WHITE, 1, cv2.LINE_AA)


def write_annotated(
    out: Path, image_rgb: np.ndarray, faces: list[FaceResult], *, top_k: int = 3
) -> Path:
    """Write the annotated image to ``out`` (with ``.png`` added where OpenCV cannot write its
    format), whole or not at all; returns the path written."""
    if not cv2.haveImageWriter(str(out)):
        out = out.with_name(out.name + ".png")
    ok, encoded = cv2.imencode(out.suffix, annotate(image_rgb, faces, top_k=top_k))
    if not ok:
        raise DataError(f"{out}: could not encode the annotated image")
    write_atomic(out, encoded.tobytes())
    return out
