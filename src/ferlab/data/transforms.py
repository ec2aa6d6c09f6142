"""Tensor transforms (torchvision v2): augmentation presets and the model's eval preprocessing.

Images arrive as uint8 tensors (C, H, W) straight from the decoded cache; geometric augmentation
runs at cache resolution, before the resize to the model's input size, where it is cheapest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from ferlab.errors import ConfigError


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: square input size, channel count and normalisation."""

    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MatchChannels(torch.nn.Module):
    """Repeat gray to 3 channels or average RGB to gray so the input fits the model."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        have = image.shape[-3]
        if have == self.channels:
            return image
        if have == 1:
            return image.expand(*image.shape[:-3], self.channels, *image.shape[-2:])
        if self.channels == 1:
            return v2.functional.rgb_to_grayscale(image)
        raise ValueError(f"cannot convert {have} channels to {self.channels}")


def _to_model_input(prep: Preprocessing) -> list[torch.nn.Module]:
    return [
        v2.Resize((prep.input_size, prep.input_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        MatchChannels(prep.in_channels),
        v2.Normalize(mean=list(prep.mean), std=list(prep.std)),
    ]


def eval_transform(prep: Preprocessing) -> v2.Compose:
    """uint8 (C, H, W) → normalised float tensor at the model's input size."""
    return v2.Compose(_to_model_input(prep))


def train_transform(preset: str, prep: Preprocessing) -> v2.Compose:
    """Augmentation preset followed by the eval preprocessing.

    ``light``: flip and small shifts; ``standard``: rotation ±10°, zoom 0.9–1.1, shifts of 10%,
    flip, brightness/contrast 0.3, random erasing (p=0.25); ``strong``: wider ranges, p=0.5 erasing.
    """
    if preset == "none":
        return eval_transform(prep)
    if preset == "light":
        augment = [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=0, translate=(0.05, 0.05)),
        ]
        erase: list[torch.nn.Module] = []
    elif preset in ("standard", "strong"):
        strong = preset == "strong"
        augment = [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(
                degrees=15 if strong else 10,
                translate=(0.15, 0.15) if strong else (0.1, 0.1),
                scale=(0.8, 1.2) if strong else (0.9, 1.1),
            ),
            v2.ColorJitter(brightness=0.4 if strong else 0.3, contrast=0.4 if strong else 0.3),
        ]
        erase = [v2.RandomErasing(p=0.5 if strong else 0.25, scale=(0.02, 0.2))]
    else:
        raise ConfigError(f"augment: unknown preset '{preset}'")
    return v2.Compose([*augment, *_to_model_input(prep), *erase])
