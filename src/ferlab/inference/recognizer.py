"""Faces in images → expression probabilities: detect, crop, decode like training, classify."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from ferlab.data.tta import tta_mode, tta_views
from ferlab.errors import ConfigError
from ferlab.inference.backends import Classifier, open_classifier
from ferlab.inference.detect import (
    DEFAULT_DETECT_SIDE,
    DEFAULT_MARGIN,
    Face,
    FaceDetector,
    detect_faces,
    libfacedetection,
    square_crop,
)
from ferlab.inference.images import ImageSource, load_image
from ferlab.inference.preprocess import crop_tensor, model_input
from ferlab.inference.stream import FrameResult, stream_results


@dataclass
class FaceResult:
    """One face: its box (x1, y1, x2, y2; None for a whole-image prediction) and its expression;
    ``valence`` and ``arousal`` in [-1, 1] from a multi-task model, else None."""

    box: tuple[int, int, int, int] | None
    label: str
    score: float
    probs: dict[str, float]
    detection_score: float | None
    valence: float | None = None
    arousal: float | None = None

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes with their probabilities, most probable first."""
        return sorted(self.probs.items(), key=lambda item: -item[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; ``valence`` and ``arousal`` only where the model predicts them."""
        record = {
            "box": None if self.box is None else list(self.box),
            "label": self.label,
            "score": self.score,
            "probs": dict(self.probs),
            "detection_score": self.detection_score,
        }
        if self.valence is not None and self.arousal is not None:
            record.update(valence=self.valence, arousal=self.arousal)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> FaceResult:
        """The face that ``to_dict`` gave ``record``."""
        box = record["box"]
        return cls(
            box=None if box is None else (box[0], box[1], box[2], box[3]),
            label=record["label"],
            score=record["score"],
            probs=dict(record["probs"]),
            detection_score=record["detection_score"],
            valence=record.get("valence"),
            arousal=record.get("arousal"),
        )


class Recognizer:
    """Finds faces and tells their expressions; ``load`` builds one from a model reference.

    ``detect=False`` takes each image as one face crop. ``min_face``: smallest face side in
    pixels; ``margin``: extra crop border per side as a fraction of the face box; ``tta``: average
    the probabilities over views of each crop: "none", "flip" (True: it and its mirror image),
    "shift" (10 views; see ``ferlab.data.tta``); None: as the model file says (flip for the
    shipped model); ``detect_side``: images with a longer
    side are shrunk to it for detection only (detection time grows with the pixel count; faces
    are still cropped from the full image); ``detector``: the face detector, libfacedetection
    unless another function of the ``FaceDetector`` shape is given (``min_score``, ``min_face``
    and ``detect_side`` apply to it too).
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        detect: bool = True,
        min_face: int = 24,
        margin: float = DEFAULT_MARGIN,
        tta: str | bool | None = None,
        min_score: float = 0.6,
        detect_side: int = DEFAULT_DETECT_SIDE,
        detector: FaceDetector = libfacedetection,
    ) -> None:
        if min_face < 1 or margin < 0 or not 0 <= min_score <= 1 or detect_side < 32:
            raise ConfigError(
                f"need min_face >= 1, margin >= 0, min_score in [0, 1] and detect_side >= 32, "
                f"got {min_face}, {margin}, {min_score}, {detect_side}"
            )
        self.classifier = classifier
        self.detect = detect
        self.min_face = min_face
        self.margin = margin
        self.tta = tta_mode(classifier.default_tta if tta is None else tta)
        self.min_score = min_score
        self.detect_side = detect_side
        self.detector = detector

    @classmethod
    def load(
        cls,
        ref: str | Path = "default",
        *,
        backend: str = "auto",
        detect: bool = True,
        min_face: int = 24,
        margin: float = DEFAULT_MARGIN,
        tta: str | bool | None = None,
        min_score: float = 0.6,
        detect_side: int = DEFAULT_DETECT_SIDE,
        detector: FaceDetector = libfacedetection,
    ) -> Recognizer:
        """``ref``: "default" (the model shipped with ferlab), a run folder, a model file or an
        ``.onnx`` export; ``backend``: auto | torch | onnx."""
        classifier = open_classifier(ref, backend)
        return cls(
            classifier,
            detect=detect,
            min_face=min_face,
            margin=margin,
            tta=tta,
            min_score=min_score,
            detect_side=detect_side,
            detector=detector,
        )

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.classes)

    @property
    def va(self) -> bool:
        """Whether results carry valence and arousal (a multi-task model)."""
        return self.classifier.va

    @overload
    def predict(self, source: ImageSource, *, rgb: bool = False) -> list[FaceResult]: ...

    @overload
    def predict(
        self, source: list[ImageSource] | tuple[ImageSource, ...], *, rgb: bool = False
    ) -> list[list[FaceResult]]: ...

    def predict(
        self,
        source: ImageSource | list[ImageSource] | tuple[ImageSource, ...],
        *,
        rgb: bool = False,
    ) -> list[FaceResult] | list[list[FaceResult]]:
        """The faces in one image, left to right (an empty list when there is none); for a list
        or tuple of images, that list per image, as ``predict_many`` gives it."""
        if isinstance(source, list | tuple):
            return self.predict_many(source, rgb=rgb)
        return self.predict_many([source], rgb=rgb)[0]

    def predict_many(
        self, sources: Iterable[ImageSource], *, batch_size: int = 64, rgb: bool = False
    ) -> list[list[FaceResult]]:
        """Per image, its faces; faces from several images share model batches of ``batch_size``.

        An unreadable source raises DataError naming it; ``rgb``: numpy arrays are RGB, not BGR.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        results: list[list[FaceResult]] = []
        pending: list[tuple[int, Face | None, torch.Tensor]] = []
        for source in sources:
            image = load_image(source, rgb=rgb)
            pending.extend((len(results), face, crop) for face, crop in self._crops(image))
            results.append([])
            while len(pending) >= batch_size:
                self._classify(pending[:batch_size], results)
                del pending[:batch_size]
        if pending:
            self._classify(pending, results)
        return results

    def stream(
        self,
        frames: Iterable[np.ndarray],
        *,
        fps: float = 30.0,
        every: int = 1,
        smooth: float = 0.5,
        batch_size: int = 64,
        frames_per_batch: int = 8,
        rgb: bool = False,
    ) -> Generator[FrameResult, None, None]:
        """Per-frame results for video frames (BGR arrays unless ``rgb``), lazily, in order.

        Faces keep a track id across frames and their probabilities are smoothed over ``smooth``
        seconds (0: off); the model runs on every ``every``-th frame, the frames between repeat
        its faces. See ``ferlab.inference.stream``.
        """
        return stream_results(
            self,
            frames,
            fps=fps,
            every=every,
            smooth=smooth,
            batch_size=batch_size,
            frames_per_batch=frames_per_batch,
            rgb=rgb,
        )

    def _crops(self, image: np.ndarray) -> list[tuple[Face | None, torch.Tensor]]:
        size, color = self.classifier.image_size, self.classifier.color
        if not self.detect:
            return [(None, crop_tensor(image, size, color))]
        faces = detect_faces(
            image,
            min_score=self.min_score,
            min_size=self.min_face,
            max_side=self.detect_side,
            detector=self.detector,
        )
        return [
            (face, crop_tensor(square_crop(image, face.box, self.margin), size, color))
            for face in faces
        ]

    def _classify(
        self, pending: list[tuple[int, Face | None, torch.Tensor]], results: list[list[FaceResult]]
    ) -> None:
        views = tta_views(torch.stack([crop for _, _, crop in pending]), self.tta)
        probs, va = self.classifier.outputs(model_input(torch.cat(views), self.classifier.prep))
        probs = probs.reshape(len(views), len(pending), -1).mean(axis=0)
        va = None if va is None else va.reshape(len(views), len(pending), -1).mean(axis=0)
        classes = self.classifier.classes
        for k, ((index, face, _), row) in enumerate(zip(pending, probs, strict=True)):
            best = int(np.argmax(row))
            results[index].append(
                FaceResult(
                    box=None if face is None else face.box,
                    label=classes[best],
                    score=float(row[best]),
                    probs={name: float(p) for name, p in zip(classes, row, strict=True)},
                    detection_score=None if face is None else face.score,
                    valence=None if va is None else float(va[k, 0]),
                    arousal=None if va is None else float(va[k, 1]),
                )
            )
