"""Face crops → model input, decoded the way training decoded its images.

Training read each image with PIL, converted it to gray (or RGB) and resized it bilinearly to the
cache size (``image_size``, 48 for FER2013); :func:`ferlab.preprocessing.eval_transform` then
brought it to the model's input. A crop from a photo goes through the same two steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ferlab.preprocessing import Preprocessing, eval_transform


def decode_settings(meta: dict[str, Any], prep: Preprocessing) -> tuple[int, str]:
    """(image_size, color) the model was trained with; its input size and gray if not recorded."""
    trained = meta.get("config", {})
    return int(trained.get("image_size", prep.input_size)), str(trained.get("color", "gray"))


def crop_tensor(crop_rgb: np.ndarray, image_size: int, color: str) -> torch.Tensor:
    """An RGB uint8 crop (H, W, 3) → uint8 (C, image_size, image_size), as the data cache has it."""
    image = Image.fromarray(crop_rgb).convert("L" if color == "gray" else "RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())


def model_input(crops: Sequence[torch.Tensor] | torch.Tensor, prep: Preprocessing) -> np.ndarray:
    """uint8 crops (C, H, W), or a batch of them → normalised float32 (N, C, S, S)."""
    batch = crops if isinstance(crops, torch.Tensor) else torch.stack(list(crops))
    return eval_transform(prep)(batch).numpy()
