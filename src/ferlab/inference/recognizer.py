"""Faces in images → expression probabilities: detect, crop, decode like training, classify."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image

from ferlab.data.tta import tta_views
from ferlab.errors import ConfigError
from ferlab.inference.detect import Face, FaceDetector, detect_faces, libfacedetection, square_crop
from ferlab.inference.face_options import FaceOptions, check_option_names
from ferlab.inference.image_results import FrameResult
from ferlab.inference.images import ImageSource, check_image_source, check_rgb, load_image
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
        if not all(hasattr(classifier, name) for name in ("spec", "outputs", "default_tta")):
            hint = (
                "; to load a model by name or path use Recognizer.load"
                if isinstance(classifier, str | os.PathLike)
                else ""
            )
            raise ConfigError(
                f"classifier: expected a loaded model (ferlab.load_model), got "
                f"{type(classifier).__name__}{hint}"
            )
        _check_options(options)
        check_option_names(face, also=("options", "detector", "prior_tau"))
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
        _check_options(options)
        check_option_names(face, also=("options", "backend", "detector", "prior_tau"))
        classifier = load_model(ref, backend)
        return cls(classifier, options, detector=detector, prior_tau=prior_tau, **face)

    def __repr__(self) -> str:
        source = getattr(self.classifier, "source", None)
        model = f"{source}" if source is not None else self.classifier.spec.name
        runtime = getattr(self.classifier, "runtime", "?")
        return (
            f"Recognizer(model='{model}' on {runtime}, classes={self.classes}, tta={self.tta!r}, "
            f"prior_tau={self.prior_tau:g}, options={self.options})"
        )

    @property
    def classes(self) -> list[str]:
        """The model's class names, in the order of its probabilities."""
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
        or tuple of images, that list per image, as ``predict_many`` gives it.

        An image is a path, encoded bytes, a binary file object, a PIL image or a numpy array:
        (H, W) gray or (H, W, 3|4) BGR(A) as OpenCV reads it (RGB with ``rgb=True``), uint8,
        uint16, or floats in [0, 1]; see :mod:`ferlab.inference.images`.
        """
        if isinstance(source, list | tuple):
            return self.predict_many(source, rgb=rgb)
        if isinstance(source, Iterator) and not hasattr(source, "read"):
            raise ConfigError(
                f"predict takes one image, a list or a tuple, got {type(source).__name__}; "
                "for other iterables of images use predict_many"
            )
        return self.predict_many([source], rgb=rgb)[0]

    def predict_many(
        self, sources: Iterable[ImageSource], *, batch_size: int = 64, rgb: bool = False
    ) -> list[list[FaceResult]]:
        """Per image, its faces; faces from several images share model batches of ``batch_size``.

        An unreadable source raises DataError naming it; in a list or tuple, every source is
        checked (a file by its header) before any is recognized, so a missing or non-image file
        fails at once. ``rgb``: numpy arrays are RGB, not BGR.
        """
        check_rgb(rgb)
        if isinstance(sources, str | os.PathLike | bytes | np.ndarray | Image.Image | Mapping) or (
            hasattr(sources, "read")
        ):
            raise ConfigError(
                f"predict_many takes an iterable of images, got {type(sources).__name__}; "
                "for one image use predict"
            )
        if isinstance(sources, list | tuple):
            for source in sources:
                check_image_source(source)
        images = (load_image(source, rgb=rgb) for source in sources)
        return self._predict(((image, self._find_faces(image)) for image in images), batch_size)

    def find_faces(self, image_rgb: ImageSource) -> list[Face]:
        """The faces this recognizer classifies in an image (any source ``predict`` takes, an
        array taken as RGB, as with ``rgb=True``): those its detector finds (``min_score``,
        ``min_face``, ``detect_side``), or the empty list with ``detect=False`` (the whole image
        is then the face)."""
        return self._find_faces(load_image(image_rgb, rgb=True))

    def _find_faces(self, image: np.ndarray) -> list[Face]:
        options = self.options
        if not options.detect:
            return []
        return detect_faces(
            image,
            min_score=options.min_score,
            min_size=options.min_face,
            max_side=options.detect_side,
            detector=self.detector,
        )

    def predict_faces(
        self,
        images_rgb: Iterable[ImageSource],
        faces: Iterable[Sequence[Face]],
        *,
        batch_size: int = 64,
    ) -> list[list[FaceResult]]:
        """Per image (any source ``predict`` takes, arrays taken as RGB), the expressions of the
        ``faces`` given for it (``Face`` objects with whole-number boxes, found earlier or tracked
        from another frame), cropped as detected faces are; with ``detect=False``, of the whole
        image whatever the faces."""
        if (
            isinstance(images_rgb, Sequence)
            and isinstance(faces, Sequence)
            and len(images_rgb) != len(faces)
        ):
            raise ConfigError(
                f"predict_faces: {len(images_rgb)} images but {len(faces)} lists of faces"
            )
        checked = (
            (image, _checked_faces(image, found, number))
            for number, (image, found) in enumerate(_pairs(images_rgb, faces), start=1)
        )
        return self._predict(checked, batch_size)

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
        clock: Callable[[int], float] | None = None,
    ) -> Generator[FrameResult, None, None]:
        """Per-frame results for video frames (BGR arrays unless ``rgb``), lazily, in order.

        Faces keep a track id across frames and their probabilities are smoothed over ``smooth``
        seconds (0: off); faces are detected every ``every`` frames (sooner when a track is new,
        lost or unsure) and classified on every frame, at their tracked boxes in between.
        ``clock``: seconds of frame ``index`` (default ``index / fps``), such as the ``time`` of
        :func:`ferlab.apps.capture.open_video`'s capture, which follows a variable frame rate.
        See ``ferlab.inference.stream``.
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
            clock=clock,
            rgb=rgb,
        )

    def _predict(
        self, images: Iterable[tuple[np.ndarray, Sequence[Face]]], batch_size: int
    ) -> list[list[FaceResult]]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
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


def _check_options(options: object) -> None:
    if options is not None and not isinstance(options, FaceOptions):
        raise ConfigError(
            f"options: expected a FaceOptions, got {type(options).__name__}; give face "
            "options as keywords (tta='flip', min_face=40, ...)"
        )


_END = object()


def _pairs(
    images: Iterable[ImageSource], faces: Iterable[Sequence[Face]]
) -> Iterator[tuple[np.ndarray, Sequence[Face]]]:
    """Each image, as an RGB uint8 array, with its faces; ConfigError where one of the two runs
    out before the other."""
    image_iter, face_iter = iter(images), iter(faces)
    count = 0
    for image in image_iter:
        found = next(face_iter, _END)
        if found is _END:
            raise ConfigError(f"predict_faces: more images than the {count} lists of faces")
        count += 1
        yield load_image(image, rgb=True), found
    if next(face_iter, _END) is not _END:
        raise ConfigError(f"predict_faces: more lists of faces than the {count} images")


def _checked_faces(image: np.ndarray, faces: object, number: int) -> list[Face]:
    """``faces`` of image ``number`` as Faces whose boxes are (x1, y1, x2, y2) in whole pixels
    with x1 < x2, y1 < y2, overlapping ``image``; ConfigError naming the first that is not."""
    where = f"predict_faces: image {number}"
    if isinstance(faces, Face | str | bytes) or not isinstance(faces, Iterable):
        raise ConfigError(f"{where}: expected a list of Face objects, got {type(faces).__name__}")
    height, width = image.shape[:2]
    checked = []
    for face in faces:
        if not isinstance(face, Face):
            raise ConfigError(
                f"{where}: expected ferlab.inference.Face(box, score) objects, got "
                f"{type(face).__name__} {face!r:.60}"
            )
        box = face.box
        if not (isinstance(box, Sequence) and len(box) == 4 and all(map(_is_whole, box))):
            raise ConfigError(
                f"{where}: face box {box!r}: expected (x1, y1, x2, y2) in whole pixels "
                "(round float boxes first)"
            )
        x1, y1, x2, y2 = (int(v) for v in box)
        if not (x1 < x2 and y1 < y2 and x2 > 0 and y2 > 0 and x1 < width and y1 < height):
            raise ConfigError(
                f"{where}: face box {tuple(box)}: expected (x1, y1, x2, y2) with x1 < x2 and "
                f"y1 < y2, overlapping the {width}x{height} image"
            )
        checked.append(Face((x1, y1, x2, y2), face.score))
    return checked


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
