"""What the registry records about a model, and the normalisations its models use."""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.5,)
GRAY_STD = (0.5,)


@dataclass(frozen=True)
class ModelInfo:
    """What the other layers need to know about a registered model.

    ``stages`` names sub-modules of ``FERModel.backbone`` (resolvable with
    ``backbone.get_submodule(stage)``), ordered from the input side to the output side, for
    progressive unfreezing.  Together they cover the backbone's parameters except, where noted
    in the builder, a final norm and ViT's class token/position embedding.
    """

    name: str
    input_size: int  # default square input size in px
    in_channels: int  # 1 for the from-scratch gray nets, 3 for ImageNet backbones
    mean: tuple[float, ...]  # normalisation, len == in_channels
    std: tuple[float, ...]
    # a torchvision weights enum name, or the .pth file name of weights torchvision does not
    # publish (see ferlab.models.imagenet_files); None for scratch nets
    pretrained_weights: str | None
    stages: tuple[str, ...]
    description: str
