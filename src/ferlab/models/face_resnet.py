"""dlib's face-recognition ResNet (29 convolutions), pretrained on faces, as a FER backbone.

The network of ``dlib_face_recognition_resnet_model_v1.dat`` (Davis King, CC0; shipped on PyPI
by ``face-recognition-models``), trained on about 3 million faces to tell people apart:

    con 7x7/2 (32) -> affine -> relu -> max pool 3x3/2
    -> 3 blocks of 32 -> 4 of 64 -> 3 of 128 -> 3 of 256 -> 1 of 256 -> global average pool

Each block is ``con 3x3 -> affine -> relu -> con 3x3 -> affine``, added to its input, then a
ReLU; the first block of each width halves the size with a stride-2 convolution and adds a
2x2-average-pooled input. As in dlib, strided convolutions and pools have no padding, and where
the two branches differ in size or channels the smaller is zero-padded (bottom, right, last
channels). ``affine`` is a per-channel scale and shift (dlib's batch normalisation folded), kept
trainable here. dlib's folding leaves convolution weights 7 to 50 times smaller than He
initialisation's and the scales after them large (3 to 14), which makes Adam's steps, about the
same size for every weight, huge beside those weights; :func:`rebalance_convolutions` moves that
scale from each convolution into its affine layer without changing the function. The 128-d
identity embedding on top is dropped: the backbone gives the 256 pooled features. Input: RGB
minus dlib's per-channel means, divided by 256 (``ModelInfo.mean/std``).
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import PooledBackbone
from .info import ModelInfo
from .registry import register_model
from .weights import load_backbone_state

__all__ = [
    "FACE_RESNET_WEIGHTS",
    "ChannelAffine",
    "FaceResBlock",
    "from_dlib_keys",
    "rebalance_convolutions",
]

FACE_RESNET_WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"
_DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # input_rgb_image's averages, in 0-255 pixels
_WIDTHS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
_STAGES = ("stem", "level4", "level3", "level2", "level1", "level0")


class ChannelAffine(nn.Module):
    """``x * weight[c] + bias[c]`` per channel (dlib's ``affine`` layer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def _pad_to(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    pad = (0, width - x.shape[3], 0, height - x.shape[2], 0, channels - x.shape[1])
    return F.pad(x, pad) if any(pad) else x


class FaceResBlock(nn.Module):
    """One residual block; ``down``: stride-2 convolution and a 2x2-average-pooled shortcut."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=padding)
        self.affine1 = ChannelAffine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = ChannelAffine(channels)
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        short = self.shortcut(x)
        if short.shape != out.shape:
            size = [max(a, b) for a, b in zip(out.shape[1:], short.shape[1:], strict=True)]
            out, short = _pad_to(out, *size), _pad_to(short, *size)
        return F.relu(out + short)


def _features() -> nn.Sequential:
    stem = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 32, 7, stride=2),
            affine=ChannelAffine(32),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(3, 2),
        )
    )
    stages: list[tuple[str, nn.Module]] = [("stem", stem)]
    channels = 32
    for name, (width, blocks, down) in zip(_STAGES[1:], _WIDTHS, strict=True):
        layers = [FaceResBlock(channels, width, down)]
        layers += [FaceResBlock(width, width, False) for _ in range(blocks - 1)]
        stages.append((name, nn.Sequential(*layers)))
        channels = width
    return nn.Sequential(OrderedDict(stages))


def from_dlib_keys(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with dlib's numbered keys (:func:`ferlab.models.dlib_file.read_dlib_state`:
    ``con.3.weight``, ``affine.3.bias``) renamed to the backbone's, in order; other keys (our own,
    ``fc.0.weight``) stay as they are."""
    rename: dict[str, str] = {}
    for kind, layer_type in (("con", nn.Conv2d), ("affine", ChannelAffine)):
        names = [n for n, m in backbone.named_modules() if isinstance(m, layer_type)]
        rename |= {f"{kind}.{index}": name for index, name in enumerate(names)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        out[f"{rename[prefix]}.{leaf}" if prefix in rename else key] = value
    return out


def rebalance_convolutions(backbone: nn.Module) -> None:
    """Scale each convolution (weight and bias) to He initialisation's standard deviation and
    divide the scale of the affine layer after it by the same factor: ``a * (s W x + s b) / s``
    is the same function, with weights of the size Adam's steps are made for."""
    layers = [m for m in backbone.modules() if isinstance(m, nn.Conv2d | ChannelAffine)]
    with torch.no_grad():
        for conv, affine in pairwise(layers):
            if not (isinstance(conv, nn.Conv2d) and isinstance(affine, ChannelAffine)):
                continue
            he_std = (2.0 / conv.weight[0].numel()) ** 0.5
            factor = he_std / float(conv.weight.std())
            conv.weight.mul_(factor)
            if conv.bias is not None:
                conv.bias.mul_(factor)
            affine.weight.div_(factor)


@register_model(
    ModelInfo(
        name="face_resnet29",
        input_size=112,
        in_channels=3,
        mean=tuple(m / 255 for m in _DLIB_MEAN_RGB),
        std=(256 / 255,) * 3,
        pretrained_weights=FACE_RESNET_WEIGHTS,
        stages=tuple(f"features.{name}" for name in _STAGES),
        description="dlib's face-recognition ResNet-29, pretrained on faces (CC0); 256 features",
    )
)
def face_resnet29(state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    backbone = PooledBackbone(_features())
    if state is not None:
        from_dlib = "con.0.weight" in state
        if from_dlib:
            state = from_dlib_keys(state, backbone)
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        load_backbone_state(backbone, state)
        if from_dlib:
            rebalance_convolutions(backbone)
    return backbone, 256
