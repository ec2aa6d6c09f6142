"""One loaded model shared by concurrent requests: predictions and Grad-CAM overlays.

Model calls take turns under one lock: Grad-CAM hooks the shared PyTorch modules (and ScoreCAM
redirects stderr process-wide), so a prediction running beside it would be captured by its hooks.
Decoding and encoding happen outside the lock. A call that cannot get the model before its
``timeout`` gives up with TimeoutError instead of running late for a client that has left.
PyTorch and the runtimes are imported when a model is loaded, not with this module.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ferlab.errors import DataError, ModelError
from ferlab.inference.motion import Box
from ferlab.inference.results import Explanation, FaceResult

if TYPE_CHECKING:
    from ferlab.inference.face_options import FaceOptions
    from ferlab.inference.recognizer import Recognizer
    from ferlab.models.artifact import ModelBundle


class ModelService:
    """A recognizer and, where the model has a PyTorch file, a copy of it for Grad-CAM;
    ``name`` is how responses refer to the model: "default" or its file or run folder's name."""

    def __init__(
        self, name: str, recognizer: Recognizer, bundle: ModelBundle | None, why_no_explain: str
    ) -> None:
        self.name = name
        self.recognizer = recognizer
        self.bundle = bundle
        self.why_no_explain = why_no_explain
        self.lock = threading.Lock()
        self.explain_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        ref: str | Path = "default",
        options: FaceOptions | None = None,
        *,
        backend: str = "auto",
        prior_tau: float | None = None,
    ) -> ModelService:
        """Load ``ref`` once, on ``backend`` as :func:`ferlab.load_model` picks it, to find faces
        as ``options`` say (see ``Recognizer``); heatmaps run on a second copy of the PyTorch model
        file (the one beside an ONNX export), on the same faces and probabilities."""
        from ferlab.inference.explain import load_explainable
        from ferlab.inference.recognizer import Recognizer
        from ferlab.inference.runtime import load_model

        runner = load_model(ref, backend)
        name = "default" if str(ref) == "default" else Path(ref).name
        bundle, why = None, ""
        try:
            bundle = load_explainable(ref)
        except ModelError as exc:
            why = str(exc).replace(str(runner.source), runner.source.name)
        return cls(name, Recognizer(runner, options, prior_tau=prior_tau), bundle, why)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` reports about the model."""
        classifier = self.recognizer.classifier
        return {
            "ref": self.name,
            "name": classifier.name,
            "classes": list(classifier.classes),
            "runtime": classifier.label,
            "input_size": classifier.prep.input_size,
            "explain": self.bundle is not None,
        }

    def predict(
        self, image_rgb: np.ndarray, *, boxes: list[Box] | None = None, timeout: float
    ) -> list[FaceResult]:
        """The faces in an RGB uint8 image, left to right; with ``boxes``, the faces at those
        boxes instead, in their order, without detection (``detection_score`` None)."""
        with _taken(self.lock, timeout):
            if boxes is None:
                return self.recognizer.predict(image_rgb, rgb=True)
            from ferlab.inference.detect import Face

            faces = [Face(box, 1.0) for box in boxes]
            found = self.recognizer.predict_faces([image_rgb], [faces])[0]
        return [dataclasses.replace(face, detection_score=None) for face in found]

    def check_explain(self, method: str, target_class: str | None) -> None:
        """The errors :meth:`explain` gives for its arguments other than the image, at once
        (before a request waits for its turn)."""
        if self.bundle is None:
            raise ModelError(f"this server's model has no heatmaps: {self.why_no_explain}")
        from ferlab.inference.explain import check_target_class
        from ferlab.inference.gradcam import check_method

        check_method(method)
        check_target_class(self.bundle, target_class)

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
        self.check_explain(method, target_class)
        assert self.bundle is not None
        from ferlab.inference.explain import explain_image

        with _taken(self.explain_lock, timeout):
            found = explain_image(
                self.bundle,
                Image.fromarray(image_rgb),
                method=method,
                target_class=target_class,
                options=self.recognizer.options,
                prior_tau=self.recognizer.prior_tau,
            )
        if not found:
            raise DataError("no face found in the image")
        if not 1 <= face <= len(found):
            raise DataError(f"face {face} asked for, the image has {len(found)}")
        return found[face - 1], len(found)


@contextmanager
def _taken(lock: threading.Lock, timeout: float) -> Iterator[None]:
    if timeout <= 0 or not lock.acquire(timeout=timeout):
        raise TimeoutError("the model stayed busy past the request's time limit")
    try:
        yield
    finally:
        lock.release()
