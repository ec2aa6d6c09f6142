"""Training augmentation (torchvision v2): presets followed by the model's eval preprocessing.

Images arrive as uint8 tensors (C, H, W) straight from the decoded cache; geometric augmentation
runs at cache resolution, before the resize to the model's input size, where it is cheapest.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ferlab.errors import ConfigError
from ferlab.preprocessing import Preprocessing, eval_transform, model_input_steps


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
    return v2.Compose([*augment, *model_input_steps(prep), *erase])
