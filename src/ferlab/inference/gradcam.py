"""Class activation maps (the ``grad-cam`` package) for a model bundle, as heatmaps or overlays.

Images come as uint8 (N, C, H, W) at cache resolution, are fed through the model's eval
preprocessing, and the maps come back at the images' own resolution. The default target layer is
the backbone's last stage that holds a convolution (``baseline_cnn``'s last stage is its fully
connected layer, which has no spatial map); for ViT it is the last encoder block's first
LayerNorm, whose 196 patch tokens are laid out as a 14x14 map.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import cv2
import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
from torch import nn
from torchvision.models import VisionTransformer

from ferlab.errors import ConfigError
from ferlab.models.artifact import ModelBundle
from ferlab.models.registry import FaceClassifier
from ferlab.preprocessing import eval_transform

METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
_CHUNK = 32  # images per CAM pass

Reshape = Callable[[torch.Tensor], torch.Tensor] | None


def default_target_layer(model: FaceClassifier) -> str:
    """The backbone sub-module whose activations the maps are built from, as a dotted path."""
    backbone = model.backbone
    if isinstance(backbone, VisionTransformer):
        last = model.info.stages[-1]
        block = list(backbone.get_submodule(last).named_children())[-1][0]
        return f"{last}.{block}.ln_1"
    for stage in reversed(model.info.stages):
        if any(isinstance(m, nn.Conv2d) for m in backbone.get_submodule(stage).modules()):
            return stage
    raise ConfigError(f"model '{model.info.name}' has no convolutional stage; pass a target layer")


def _resolve_layer(
    model: FaceClassifier, target_layer: str | None
) -> tuple[str, nn.Module, Reshape]:
    name = target_layer or default_target_layer(model)
    try:
        layer = model.backbone.get_submodule(name)
    except AttributeError:
        stages = ", ".join(model.info.stages)
        raise ConfigError(
            f"target layer '{name}' is not a module of the {model.info.name} backbone "
            f"(its stages: {stages})"
        ) from None
    tokens = isinstance(model.backbone, VisionTransformer) and name.startswith("encoder.")
    return name, layer, vit_reshape_transform if tokens else None


def check_method(method: str) -> None:
    """ConfigError unless ``method`` names a CAM method of :data:`METHODS`."""
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method '{method}'; available: {', '.join(METHODS)}")


def _check(
    bundle: ModelBundle, images: torch.Tensor, targets: list[int] | None, method: str
) -> None:
    check_method(method)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    if targets is not None:
        if len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        bad = [t for t in targets if not 0 <= t < len(bundle.classes)]
        if bad:
            raise ConfigError(
                f"target class {bad[0]} out of range; the model has {len(bundle.classes)} classes"
            )


def gradcam_heatmaps(
    bundle: ModelBundle,
    images: torch.Tensor,
    targets: list[int] | None = None,
    method: str = "gradcam",
    target_layer: str | None = None,
) -> np.ndarray:
    """Maps (N, H, W) in [0, 1] for uint8 images (N, C, H, W); ``targets``: class index per image
    (default: the predicted class); ``target_layer``: dotted path below ``model.backbone``."""
    _check(bundle, images, targets, method)
    height, width = images.shape[-2:]
    if len(images) == 0:
        return np.zeros((0, height, width), np.float32)
    model = bundle.model
    name, layer, reshape = _resolve_layer(model, target_layer)
    transform = eval_transform(bundle.prep)
    maps = []
    for start in range(0, len(images), _CHUNK):
        batch = transform(images[start : start + _CHUNK]).requires_grad_(True)
        chunk = None if targets is None else targets[start : start + _CHUNK]
        cams = _run_cam(METHODS[method], model, layer, reshape, batch, chunk, name)
        maps.extend(
            cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR) for cam in cams
        )
    return np.clip(np.stack(maps), 0.0, 1.0).astype(np.float32)


def _run_cam(
    cam_class: type[BaseCAM],
    model: FaceClassifier,
    layer: nn.Module,
    reshape: Reshape,
    batch: torch.Tensor,
    targets: list[int] | None,
    name: str,
) -> np.ndarray:
    outputs = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
    cam = cam_class(model=model, target_layers=[layer], reshape_transform=reshape)
    # ScoreCAM draws a tqdm bar per image on stderr.
    quiet = (
        contextlib.redirect_stderr(io.StringIO())
        if cam_class is ScoreCAM
        else contextlib.nullcontext()
    )
    try:
        with torch.enable_grad(), quiet:
            return cam(input_tensor=batch, targets=outputs)
    except ValueError as exc:
        raise ConfigError(f"target layer '{name}' gives no spatial map ({exc})") from None
    finally:
        cam.activations_and_grads.release()


def overlay_heatmap(image_rgb: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """A jet-coloured ``heatmap`` (h, w) in [0, 1], resized to and blended onto an RGB uint8
    image (H, W, 3); ``weight``: the image's share of the blend."""
    height, width = image_rgb.shape[:2]
    mask = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(
        image_rgb.astype(np.float32) / 255, np.clip(mask, 0, 1), use_rgb=True, image_weight=weight
    )


def gradcam_overlays(images: torch.Tensor, heatmaps: np.ndarray) -> np.ndarray:
    """``heatmaps`` (N, H, W) from :func:`gradcam_heatmaps` blended onto their uint8 images
    (N, C, H, W): RGB uint8 (N, H, W, 3)."""
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
    pictures = rgb.permute(0, 2, 3, 1).numpy()
    if len(pictures) == 0:
        return np.zeros((*pictures.shape[:3], 3), np.uint8)
    return np.stack([overlay_heatmap(p, h) for p, h in zip(pictures, heatmaps, strict=True)])
