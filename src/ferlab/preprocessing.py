"""What a model expects of its input, and the eval transform that brings a uint8 image there.

Shared by the data pipeline (training ends its augmentation with it), the model file (which stores
it) and inference; it depends on none of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: square input size, channel count and normalisation."""

    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            in_channels=int(data["in_channels"]),
            mean=tuple(float(m) for m in data["mean"]),
            std=tuple(float(s) for s in data["std"]),
        )


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


def model_input_steps(prep: Preprocessing) -> list[torch.nn.Module]:
    """Resize, scale to [0, 1], match the channels, normalise: what every transform ends with."""
    return [
        v2.Resize((prep.input_size, prep.input_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        MatchChannels(prep.in_channels),
        v2.Normalize(mean=list(prep.mean), std=list(prep.std)),
    ]


def eval_transform(prep: Preprocessing) -> v2.Compose:
    """uint8 (C, H, W) → normalised float tensor at the model's input size."""
    return v2.Compose(model_input_steps(prep))
