"""Two nets trained from scratch on gray 48x48 faces (FER2013 style).

Both accept any input size: ``baseline_cnn`` pools adaptively to 6x6 before its fully connected
layer (a no-op at 48 px), ``vgg_fer`` ends with global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from .info import GRAY_MEAN, GRAY_STD, ModelInfo
from .registry import register_model
from .weights import load_backbone_state

__all__ = ["BaselineCNN", "VGGFer"]


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


def _block(in_ch: int, out_ch: int, dropout: float) -> nn.Sequential:
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> maxpool 2 (-> Dropout2d)."""
    layers = [*_conv_bn_relu(in_ch, out_ch), *_conv_bn_relu(out_ch, out_ch), nn.MaxPool2d(2)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


class BaselineCNN(nn.Module):
    """Classic FER baseline: three conv blocks (32, 64, 128) and a 512-unit FC layer."""

    feature_dim = 512

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.block1 = _block(in_channels, 32, 0.25)
        self.block2 = _block(32, 64, 0.25)
        self.block3 = _block(64, 128, 0.25)
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        self.fc = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(128 * 6 * 6, self.feature_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),  # the head adds its own dropout on top
        )
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block3(self.block2(self.block1(x)))))


class VGGFer(nn.Module):
    """VGG-style net: four blocks (64, 128, 256, 512) of two convs, then global average pool."""

    feature_dim = 512

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.block1 = _block(in_channels, 64, 0.0)
        self.block2 = _block(64, 128, 0.0)
        self.block3 = _block(128, 256, 0.0)
        self.block4 = _block(256, 512, 0.0)
        self.pool = nn.AdaptiveAvgPool2d(1)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return torch.flatten(self.pool(x), 1)


def _gray_info(name: str, stages: tuple[str, ...], description: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        input_size=48,
        in_channels=1,
        mean=GRAY_MEAN,
        std=GRAY_STD,
        pretrained_weights=None,
        stages=stages,
        description=description,
    )


@register_model(
    _gray_info(
        "baseline_cnn",
        ("block1", "block2", "block3", "fc"),
        "from-scratch CNN baseline for gray 48x48 faces; 512 features",
    )
)
def baseline_cnn(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    net = BaselineCNN()
    if state is not None:
        load_backbone_state(net, state)
    return net, net.feature_dim


@register_model(
    _gray_info(
        "vgg_fer",
        ("block1", "block2", "block3", "block4"),
        "from-scratch VGG-style net for gray 48x48 faces; 512 features",
    )
)
def vgg_fer(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    net = VGGFer()
    if state is not None:
        load_backbone_state(net, state)
    return net, net.feature_dim
