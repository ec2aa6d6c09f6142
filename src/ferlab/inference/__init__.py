"""Apply a trained model to photos: face detection, expression recognition, ONNX export."""

from ferlab.inference.detect import Face, detect_faces
from ferlab.inference.recognizer import FaceResult, Recognizer

__all__ = ["Face", "FaceResult", "Recognizer", "detect_faces"]
