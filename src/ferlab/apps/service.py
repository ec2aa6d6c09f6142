"""One loaded model shared by concurrent requests: predictions and Grad-CAM overlays.

Model calls take turns under one lock: Grad-CAM hooks the shared PyTorch modules (and ScoreCAM
redirects stderr process-wide), so a prediction running beside it would be captured by its hooks.
Decoding and encoding happen outside the lock. A call that cannot get the model before its
``timeout`` gives up with TimeoutError instead of running late for a client that has left.
PyTorch and the runtimes are imported when a model is loaded, not with this module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ferlab.errors import DataError, ModelError
from ferlab.inference.results import Explanation, FaceResult

if TYPE_CHECKING:
    from ferlab.inference.recognizer import Recognizer
    from ferlab.models.artifact import ModelBundle


class ModelService:
    """A recognizer and, where the model is a PyTorch file, the same model for Grad-CAM."""

    def __init__(
        self, ref: str, recognizer: Recognizer, bundle: ModelBundle | None, why_no_explain: str
    ) -> None:
        self.ref = ref
        self.recognizer = recognizer
        self.bundle = bundle
        self.why_no_explain = why_no_explain
        self.lock = threading.Lock()

    @classmethod
    def load(cls, ref: str | Path = "default", *, backend: str = "auto") -> ModelService:
        """Load ``ref`` once, on ``backend`` as :func:`open_classifier` picks it; heatmaps run on
        the same PyTorch weights, or on the PyTorch model file beside an ONNX runtime."""
        from ferlab.inference.backends import TorchClassifier, open_classifier
        from ferlab.inference.explain import load_explainable
        from ferlab.inference.recognizer import Recognizer

        classifier = open_classifier(ref, backend)
        bundle, why = None, ""
        if isinstance(classifier, TorchClassifier):
            bundle = classifier.bundle
        else:
            try:
                bundle = load_explainable(ref)
            except ModelError as exc:
                why = str(exc)
        return cls(str(ref), Recognizer(classifier), bundle, why)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` reports about the model."""
        classifier = self.recognizer.classifier
        return {
            "ref": self.ref,
            "name": classifier.name,
            "classes": list(classifier.classes),
            "runtime": classifier.runtime,
            "input_size": classifier.prep.input_size,
            "explain": self.bundle is not None,
        }

    def predict(self, image_rgb: np.ndarray, *, timeout: float) -> list[FaceResult]:
        """The faces in an RGB uint8 image, left to right."""
        with self._model(timeout):
            return self.recognizer.predict(image_rgb, rgb=True)

    def explain(
        self,
        image_rgb: np.ndarray,
        *,
        face: int = 1,
        method: str = "gradcam",
        target_class: str | None = None,
        timeout: float,
    ) -> tuple[Explanation, int]:
        """Face number ``face``'s heatmap overlay and how many faces the image holds."""
        if self.bundle is None:
            raise ModelError(f"this server's model has no heatmaps: {self.why_no_explain}")
        from ferlab.inference.explain import explain_image

        with self._model(timeout):
            found = explain_image(
                self.bundle, Image.fromarray(image_rgb), method=method, target_class=target_class
            )
        if not found:
            raise DataError("no face found in the image")
        if not 1 <= face <= len(found):
            raise DataError(f"face {face} asked for, the image has {len(found)}")
        return found[face - 1], len(found)

    @contextmanager
    def _model(self, timeout: float) -> Iterator[None]:
        if not self.lock.acquire(timeout=max(0.0, timeout)):
            raise TimeoutError("the model stayed busy past the request's time limit")
        try:
            yield
        finally:
            self.lock.release()
