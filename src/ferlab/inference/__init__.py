"""Apply a trained model to photos: face detection, expression recognition, ONNX export.

The names below are imported lazily, so that ``ferlab.inference.results`` and the other light
modules load without PyTorch.
"""

from __future__ import annotations

from ferlab.lazy import lazy_dir, lazy_exports

_EXPORTS = {
    "Face": "ferlab.inference.detect",
    "FaceDetector": "ferlab.inference.detect",
    "detect_faces": "ferlab.inference.detect",
    "libfacedetection": "ferlab.inference.detect",
    "FaceOptions": "ferlab.inference.face_options",
    "FaceResult": "ferlab.inference.results",
    "FrameResult": "ferlab.inference.image_results",
    "ImageResult": "ferlab.inference.image_results",
    "Recognizer": "ferlab.inference.recognizer",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
