"""Apply a trained model to photos: face detection, expression recognition, ONNX export."""

from ferlab.inference.detect import Face, FaceDetector, detect_faces, libfacedetection
from ferlab.inference.recognizer import FaceResult, Recognizer

__all__ = ["Face", "FaceDetector", "FaceResult", "Recognizer", "detect_faces", "libfacedetection"]
