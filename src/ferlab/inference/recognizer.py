"""Faces in images → expression probabilities: detect, crop, decode like training, classify."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from ferlab.data.tta import tta_views
from ferlab.errors import ConfigError
from ferlab.inference.detect import Face, FaceDetector, detect_faces, libfacedetection, square_crop
from ferlab.inference.face_options import FaceOptions
from ferlab.inference.image_results import FrameResult
from ferlab.inference.images import ImageSource, check_image_source, load_image
from ferlab.inference.results import FaceResult
from ferlab.inference.runner import ModelRunner
from ferlab.inference.runtime import load_model
from ferlab.inference.stream import stream_results
from ferlab.models.prior import check_prior_tau, prior_adjusted
from ferlab.tta_modes import tta_mode


class Recognizer:
    """Finds faces and tells their expressions; ``load`` builds one from a model reference.

    ``options`` (see :class:`FaceOptions`), with any of its fields given as keywords on top
    (``detect``, ``min_face``, ``min_score``, ``margin``, ``detect_side``, ``tta``): how faces
    are found, cropped and viewed; ``tta`` is the mode in use, the model file's where the options
    leave it None. ``detector``: the face detector, libfacedetection unless another function of
    the ``FaceDetector`` shape is given (``min_score``, ``min_face`` and ``detect_side`` apply to
    it too); ``prior_tau``: divide the probabilities by the model's training class prior to this
    power and renormalise (``ferlab.models.prior``; None: as the model file says, 0 where it says
    nothing).
    """

    def __init__(
        self,
        classifier: ModelRunner,
        options: FaceOptions | None = None,
        *,
        detector: FaceDetector = libfacedetection,
        prior_tau: float | None = None,
        **face: Any,
    ) -> None:
        if not callable(detector):
            raise ConfigError(
                f"detector: expected a function from an RGB image to its faces, "
                f"got {type(detector).__name__}"
            )
        self.classifier = classifier
        self.options = (options or FaceOptions()).replace(**face)
        tta = self.options.tta
        self.tta = tta_mode(classifier.default_tta if tta is None else tta)
        self.detector = detector
        spec = classifier.spec
        self.prior_tau = spec.prior_tau if prior_tau is None else check_prior_tau(prior_tau)
        self.prior = spec.prior(f"model {spec.name}") if self.prior_tau else None

    @classmethod
    def load(
        cls,
        ref: str | Path | ModelRunner = "default",
        options: FaceOptions | None = None,
        *,
        backend: str = "auto",
        detector: FaceDetector = libfacedetection,
        prior_tau: float | None = None,
        **face: Any,
    ) -> Recognizer:
        """``ref``: "default" (the model shipped with ferlab), a shipped model's name, a run
        folder, a model file, an ``.onnx`` export or a runner; ``backend``: auto | torch | onnx
        (see :func:`ferlab.inference.runtime.load_model`); the rest as for the constructor."""
        classifier = load_model(ref, backend)
        return cls(classifier, options, detector=detector, prior_tau=prior_tau, **face)

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

        An unreadable source raises DataError naming it; in a list or tuple, every source is
        checked (a file by its header) before any is recognized, so a missing or non-image file
        fails at once. ``rgb``: numpy arrays are RGB, not BGR.
        """
        if isinstance(sources, str | os.PathLike | bytes | np.ndarray):
            raise ConfigError(
                f"predict_many takes an iterable of images, got {type(sources).__name__}; "
                "for one image use predict"
            )
        if isinstance(sources, list | tuple):
            for source in sources:
                check_image_source(source)
        images = (load_image(source, rgb=rgb) for source in sources)
        return self._predict(((image, self.find_faces(image)) for image in images), batch_size)

    def find_faces(self, image_rgb: np.ndarray) -> list[Face]:
        """The faces this recognizer classifies in an RGB uint8 image: those its detector finds
        (``min_score``, ``min_face``, ``detect_side``), or the empty list with ``detect=False``
        (the whole image is then the face)."""
        options = self.options
        if not options.detect:
            return []
        return detect_faces(
            image_rgb,
            min_score=options.min_score,
            min_size=options.min_face,
            max_side=options.detect_side,
            detector=self.detector,
        )

    def predict_faces(
        self,
        images_rgb: Iterable[np.ndarray],
        faces: Iterable[Sequence[Face]],
        *,
        batch_size: int = 64,
    ) -> list[list[FaceResult]]:
        """Per RGB uint8 image, the expressions of the ``faces`` given for it (boxes found
        earlier or tracked from another frame), cropped as detected faces are; with
        ``detect=False``, of the whole image whatever the faces."""
        return self._predict(zip(images_rgb, faces, strict=True), batch_size)

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
        seconds (0: off); faces are detected every ``every`` frames (sooner when a track is new,
        lost or unsure) and classified on every frame, at their tracked boxes in between. See
        ``ferlab.inference.stream``.
        """
        if isinstance(frames, str | os.PathLike | np.ndarray) or not hasattr(frames, "__iter__"):
            raise ConfigError(
                f"stream takes an iterable of frames, got {type(frames).__name__}; for a video "
                "file, ferlab.apps.capture.open_video(path).frames() gives them"
            )
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

    def _predict(
        self, images: Iterable[tuple[np.ndarray, Sequence[Face]]], batch_size: int
    ) -> list[list[FaceResult]]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        results: list[list[FaceResult]] = []
        pending: list[tuple[int, Face | None, torch.Tensor]] = []
        for image, faces in images:
            pending.extend((len(results), face, crop) for face, crop in self._crops(image, faces))
            results.append([])
            while len(pending) >= batch_size:
                self._classify(pending[:batch_size], results)
                del pending[:batch_size]
        if pending:
            self._classify(pending, results)
        return results

    def _crops(
        self, image: np.ndarray, faces: Sequence[Face]
    ) -> list[tuple[Face | None, torch.Tensor]]:
        spec, options = self.classifier.spec, self.options
        if not options.detect:
            return [(None, spec.crop_tensor(image))]
        margin = options.margin
        return [(face, spec.crop_tensor(square_crop(image, face.box, margin))) for face in faces]

    def _classify(
        self, pending: list[tuple[int, Face | None, torch.Tensor]], results: list[list[FaceResult]]
    ) -> None:
        views = tta_views(torch.stack([crop for _, _, crop in pending]), self.tta)
        probs, va = self.classifier.outputs(self.classifier.spec.model_input(torch.cat(views)))
        probs = probs.reshape(len(views), len(pending), -1).mean(axis=0)
        if self.prior is not None:
            probs = prior_adjusted(probs, self.prior, self.prior_tau)
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
