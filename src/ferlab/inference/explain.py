"""Why a face got its expression: Grad-CAM style heatmaps over the face crops of a photo.

Faces are found, cropped and decoded the way :class:`ferlab.inference.Recognizer` does it; each
heatmap is computed at the model's decode size and blended onto the crop at the crop's own size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ferlab.errors import ConfigError
from ferlab.inference.detect import square_crop
from ferlab.inference.face_options import FaceOptions
from ferlab.inference.images import ImageSource, load_image
from ferlab.inference.recognizer import Recognizer
from ferlab.inference.results import Explanation
from ferlab.inference.runner import ModelRunner, TorchModel
from ferlab.inference.runtime import load_model
from ferlab.models.artifact import ModelBundle


def load_explainable(ref: str | Path | ModelRunner = "default") -> ModelBundle:
    """The PyTorch model to explain: a reference opened on torch (``load_model``), or a runner's
    own; an ONNX export is refused with what can explain it."""
    onnx = not isinstance(ref, ModelRunner) and Path(ref).suffix.lower() == ".onnx"
    return load_model(ref, "auto" if onnx else "torch").explainable()


def check_target_class(bundle: ModelBundle, target_class: str | None) -> None:
    """ConfigError unless ``target_class`` is None or one of the model's classes."""
    if target_class is not None and target_class not in bundle.classes:
        raise ConfigError(
            f"unknown target class '{target_class}'; model classes: {', '.join(bundle.classes)}"
        )


CLASS_AGNOSTIC = ("eigencam",)  # methods whose heatmap is the same whatever class is explained


def check_explain_options(method: str, target_class: str | None, target_layer: str | None) -> None:
    """ConfigError for a ``target_class`` that ``method`` cannot explain (EigenCAM's heatmap is
    the activations' main component, the same for every class) or an empty ``target_layer``."""
    if target_class is not None and method in CLASS_AGNOSTIC:
        raise ConfigError(
            f"--target-class {target_class}: {method} gives the same heatmap for every class; "
            "leave --target-class out or use gradcam, gradcam++ or scorecam"
        )
    if target_layer is not None and not target_layer.strip():
        raise ConfigError(
            "--target-layer is empty; give a dotted module path below the backbone, or leave it "
            "out for the last convolutional stage"
        )


def explain_image(
    bundle: ModelBundle,
    source: ImageSource,
    *,
    method: str = "gradcam",
    target_class: str | None = None,
    target_layer: str | None = None,
    options: FaceOptions | None = None,
    prior_tau: float | None = None,
) -> list[Explanation]:
    """Heatmaps for the faces in ``source`` (or for the whole image where ``options.detect`` is
    False); ``target_class``: the class to explain instead of each face's predicted one.

    Faces and probabilities are those ``Recognizer.predict`` gives with ``options`` and
    ``prior_tau`` (its test-time augmentation and prior adjustment included); the heatmap is of
    the crop as it is, one view. A ``target_class`` with a class-agnostic ``method`` (eigencam)
    and an empty ``target_layer`` are ConfigErrors.
    """
    check_explain_options(method, target_class, target_layer)
    check_target_class(bundle, target_class)
    image = load_image(source)
    recognizer = Recognizer(TorchModel(bundle), options, prior_tau=prior_tau)
    faces = recognizer.predict(image, rgb=True)
    if not faces:
        return []
    margin = recognizer.options.margin
    crops = [image if face.box is None else square_crop(image, face.box, margin) for face in faces]
    # grad-cam (with matplotlib and scikit-learn) loads with the first heatmap, not the model.
    from ferlab.inference.gradcam import gradcam_heatmaps, overlay_heatmap

    tensors = torch.stack([bundle.spec.crop_tensor(crop) for crop in crops])
    labels = [face.label if target_class is None else target_class for face in faces]
    targets = [bundle.classes.index(label) for label in labels]
    heatmaps = gradcam_heatmaps(bundle, tensors, targets, method, target_layer)
    return [
        Explanation(
            face=number,
            label=label,
            score=face.probs[label],
            box=face.box,
            overlay=overlay_heatmap(crop, heatmap),
            heatmap=heatmap,
            tta=recognizer.tta,
        )
        for number, (face, label, crop, heatmap) in enumerate(
            zip(faces, labels, crops, heatmaps, strict=True), start=1
        )
    ]
