"""Test-time augmentation: the views of each image whose class probabilities are averaged.

``none``: the image alone; ``flip``: it and its mirror image; ``shift``: those two, and both again
moved by 1/16 of the side (3 px at 48) left, right, up and down, the border pixels repeated: 10
views, so 5x the cost of ``flip``. The shift stays inside the training augmentation's 10%. For
the shipped model on FER2013 PublicTest, where it was chosen over 1, 2 px and diagonal shifts and
over ten-crop (MODEL_CARD.md): 0.6980 none, 0.6996 flip, 0.7069 shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ferlab.tta_modes import tta_mode

SHIFT_FRACTION = 1 / 16


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch (N, C, H, W), any dtype, the batch itself first."""
    mode = tta_mode(mode)
    views = [images]
    if mode == "none":
        return views
    if mode == "shift":
        step = max(1, round(min(images.shape[-2:]) * SHIFT_FRACTION))
        views += [
            shifted(images, dx, dy) for dx, dy in ((-step, 0), (step, 0), (0, -step), (0, step))
        ]
    return views + [view.flip(-1) for view in views]


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Content moved by (dx, dy) pixels (right and down positive), edges repeated."""
    pad = max(abs(dx), abs(dy))
    height, width = images.shape[-2:]
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    top, left = pad - dy, pad - dx
    return padded[..., top : top + height, left : left + width].to(images.dtype)
