"""Draw predictions on an image with OpenCV: box, label and score, probability bars per face, and
valence and arousal where the model predicts them.

Lines and text grow with the image. Boxes are drawn in the label's colour over a dark outline, so
they show on light and dark backgrounds alike; the label row's text is black or white, whichever
contrasts more with its colour. Panels go beside their boxes where they cover no other face
(``ferlab.inference.label_layout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferlab.errors import DataError
from ferlab.inference.images import ImageSource, load_image
from ferlab.inference.label_layout import Rect, place_panels
from ferlab.inference.results import FaceResult, check_top_k
from ferlab.outputs import write_atomic

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_PANEL = (30, 30, 30)
_BAR_TRACK = (80, 80, 80)
PALETTE = [  # BGR, by class index: strong hues, none of them gray
    (40, 40, 220),  # red
    (60, 160, 40),  # green
    (190, 70, 150),  # purple
    (0, 190, 250),  # yellow
    (200, 110, 20),  # blue
    (230, 200, 50),  # cyan
    (150, 90, 230),  # pink
    (30, 105, 180),  # brown
]


def class_colour(index: int) -> tuple[int, int, int]:
    """The BGR colour of class ``index``."""
    return PALETTE[index % len(PALETTE)]


def contrast_ratio(a_bgr: tuple[int, int, int], b_bgr: tuple[int, int, int]) -> float:
    """WCAG contrast ratio of two colours: 1 (same luminance) to 21 (black on white)."""
    lighter, darker = sorted((_luminance(a_bgr), _luminance(b_bgr)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _luminance(bgr: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an 8-bit BGR colour."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in bgr]
    return 0.0722 * linear[0] + 0.7152 * linear[1] + 0.2126 * linear[2]


def text_colour(background_bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background_bgr``."""
    black, white = contrast_ratio(_BLACK, background_bgr), contrast_ratio(_WHITE, background_bgr)
    return _BLACK if black >= white else _WHITE


@dataclass(frozen=True)
class Style:
    """Sizes for an image: font scale (``small`` for the bar rows), line and text thickness, and
    the padding of a text row."""

    scale: float
    small: float
    line: int
    text: int

    @property
    def pad(self) -> int:
        return max(4, round(8 * self.scale))

    @classmethod
    def for_image(cls, shape: tuple[int, ...]) -> Style:
        side = min(shape[:2])
        scale = max(0.4, side / 900)
        return cls(scale, max(0.35, 0.75 * scale), max(2, round(side / 300)), max(1, round(scale)))


@dataclass
class _Panel:
    """A face's label panel: title row, ``top`` bar rows and a valence/arousal row."""

    title: str
    colour: tuple[int, int, int]
    top: list[tuple[str, float]]
    va_text: str | None
    row: int
    lift: int  # from a row's bottom up to its text's baseline
    width: int

    @property
    def height(self) -> int:
        return self.row * (1 + len(self.top) + (self.va_text is not None)) + 4


def annotate(
    image_rgb: ImageSource,
    faces: list[FaceResult],
    *,
    top_k: int = 3,
    tags: Sequence[str] | None = None,
) -> np.ndarray:
    """A BGR uint8 copy of ``image_rgb`` (any image ``Recognizer.predict`` takes, an array taken
    as RGB, converted as there) with each face's box, a panel with its label and score, bars for
    its ``top_k`` classes and a valence/arousal row where the face has them; a whole-image
    prediction (no box) gets only the panel. ``tags`` (e.g. track ids) start the label rows."""
    check_top_k(top_k)
    canvas = load_image(image_rgb, rgb=True)[:, :, ::-1].copy()  # never the caller's array
    style = Style.for_image(canvas.shape)
    panels = _panels(faces, top_k, style, tags)
    for face, panel in zip(faces, panels, strict=True):
        if face.box is not None:
            x1, y1, x2, y2 = face.box
            cv2.rectangle(canvas, (x1, y1), (x2, y2), _BLACK, style.line + 2)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), panel.colour, style.line)
    classes = list(faces[0].probs) if faces else []
    for panel, rect in zip(panels, _place(faces, panels, canvas.shape), strict=True):
        _draw(canvas, panel, rect, classes, style)
    return canvas


def panel_rects(
    shape: tuple[int, ...],
    faces: list[FaceResult],
    *,
    top_k: int = 3,
    tags: Sequence[str] | None = None,
) -> list[Rect]:
    """Where ``annotate`` puts each face's panel on an image of ``shape`` (x1, y1, x2, y2)."""
    return _place(faces, _panels(faces, top_k, Style.for_image(shape), tags), shape)


def _panels(
    faces: list[FaceResult], top_k: int, style: Style, tags: Sequence[str] | None
) -> list[_Panel]:
    return [
        _layout(face, top_k, style, None if tags is None else tags[i])
        for i, face in enumerate(faces)
    ]


def _place(faces: list[FaceResult], panels: list[_Panel], shape: tuple[int, ...]) -> list[Rect]:
    sizes = [(panel.width, panel.height) for panel in panels]
    return place_panels([face.box for face in faces], sizes, (shape[1], shape[0]))


def _layout(face: FaceResult, top_k: int, style: Style, tag: str | None) -> _Panel:
    classes = list(face.probs)
    title = (
        f"{face.label} {face.score:.2f}" if tag is None else f"{tag} {face.label} {face.score:.2f}"
    )
    (title_w, text_h), descent = cv2.getTextSize(title, _FONT, style.scale, style.text)
    row = text_h + descent + style.pad
    names_w = max(_width(f"{n} 0.00", style.small, style.text) for n in classes)
    width = max(title_w, round(60 * style.scale) + names_w + 6) + 6
    va_text = None
    if face.valence is not None and face.arousal is not None:
        va_text = f"V {face.valence:+.2f} A {face.arousal:+.2f}"
        width = max(width, _width(va_text, style.small, style.text) + 12)
    colour = class_colour(classes.index(face.label))
    lift = style.pad // 2 + descent
    return _Panel(title, colour, face.top(top_k), va_text, row, lift, width)


def _width(text: str, scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _draw(canvas: np.ndarray, panel: _Panel, rect: Rect, classes: list[str], style: Style) -> None:
    x, y, x2, y2 = rect
    row, bar = panel.row, round(60 * style.scale)
    cv2.rectangle(canvas, (x, y), (x2, y2), _PANEL, cv2.FILLED)
    cv2.rectangle(canvas, (x, y), (x2, y + row), panel.colour, cv2.FILLED)
    origin = (x + 3, y + row - panel.lift)
    ink = text_colour(panel.colour)
    cv2.putText(canvas, panel.title, origin, _FONT, style.scale, ink, style.text, cv2.LINE_AA)
    inset = max(2, style.pad // 3)  # between bars, and above and below each
    for i, (name, prob) in enumerate(panel.top, start=1):
        top_y, bottom_y = y + i * row + inset, y + (i + 1) * row - inset
        tint = class_colour(classes.index(name))
        cv2.rectangle(canvas, (x + 3, top_y), (x + 3 + bar, bottom_y), _BAR_TRACK, -1)
        cv2.rectangle(canvas, (x + 3, top_y), (x + 3 + round(bar * prob), bottom_y), tint, -1)
        label = f"{name} {prob:.2f}"
        origin = (x + bar + 8, y + (i + 1) * row - panel.lift)
        cv2.putText(canvas, label, origin, _FONT, style.small, _WHITE, style.text, cv2.LINE_AA)
    if panel.va_text is not None:
        origin = (x + 3, y + (len(panel.top) + 2) * row - panel.lift)
        cv2.putText(
            canvas, panel.va_text, origin, _FONT, style.small, _WHITE, style.text, cv2.LINE_AA
        )


def annotated_name(name: Path) -> Path:
    """The name an annotated copy of image ``name`` is written under: ``name``, with ``.png``
    added where OpenCV cannot write its format."""
    suffix = name.suffix.lower()
    if suffix.isascii() and cv2.haveImageWriter(f"image{suffix}"):
        return name
    return name.with_name(name.name + ".png")


def write_annotated(out: Path, drawn_bgr: np.ndarray) -> Path:
    """Write an annotated image (``annotate``'s BGR array) to ``out`` (under
    :func:`annotated_name`), whole or not at all; returns the path written."""
    out = annotated_name(out)
    ok, encoded = cv2.imencode(out.suffix, drawn_bgr)
    if not ok:
        raise DataError(f"{out}: could not encode the annotated image")
    write_atomic(out, encoded.tobytes())
    return out
