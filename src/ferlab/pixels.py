"""Pixels of any decoded image as RGB uint8, the same way for training and for prediction.

A PIL image gets its EXIF rotation, 16-bit values scaled by 1/257 and alpha composited onto white;
an array's pixels are taken when their type and range say what they mean (uint8, uint16, other
integers in 0-255, floats in [0, 1]) and refused otherwise.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from ferlab.errors import DataError

WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""PIL modes of more than 8 bits a pixel."""


def pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """A decoded PIL image as an RGB uint8 array: EXIF rotation applied, 16-bit values scaled by
    1/257, alpha composited onto white, other modes converted; DataError naming ``name`` for a
    mode PIL cannot convert."""
    image = ImageOps.exif_transpose(image)
    if image.mode in WIDE_MODES:
        return gray_to_rgb(wide_to_uint8(np.asarray(image), name))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    try:
        converted = image.convert("RGB")
    except ValueError as exc:
        raise DataError(f"{name}: unsupported colour mode {image.mode} ({exc})") from None
    return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))


def onto_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``colour`` composited onto white by ``alpha`` (uint8), as PIL images with alpha are."""
    if alpha.min() == 255:
        return colour
    opacity = alpha[:, :, None].astype(np.float32) / 255
    return np.round(colour * opacity + 255 * (1 - opacity)).astype(np.uint8)


def wide_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """A 16-bit or 32-bit PIL image's pixels: 16-bit values (above 255) scaled by 1/257."""
    if array.dtype.kind == "f":
        return array_to_uint8(array, name)
    sixteen_bit = array.dtype == np.uint16 or array.max() > 255
    return (array // 257 if sixteen_bit else array).clip(0, 255).astype(np.uint8)


def array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """An array's pixels as uint8: uint8 as is; uint16 scaled by 1/257; other integers in 0-255
    as they are; floats in [0, 1] times 255. Anything else is refused, never clipped or guessed."""
    if array.dtype == np.uint8:
        return array
    finite = array.dtype.kind != "f" or np.isfinite(array).all()
    if array.dtype.kind not in "iuf" or not finite:
        what = f"{array.dtype} values" if finite else "NaN or infinite values"
        raise DataError(
            f"{name}: unsupported pixels ({what}); use uint8, uint16 or floats in [0, 1]"
        )
    low, high = array.min().item(), array.max().item()
    if array.dtype == np.uint16:
        if 0 < high <= 255:
            raise DataError(
                f"{name}: a uint16 array whose values are all at most {high} (8-bit pixels in a "
                "16-bit array?); pass array.astype(np.uint8), or 16-bit pixels in 0-65535"
            )
        return (array // 257).astype(np.uint8)
    if array.dtype.kind in "iu":
        if low < 0 or high > 255:
            raise DataError(
                f"{name}: {array.dtype} pixel values from {low} to {high}, outside 0-255; "
                "clip them (np.clip(array, 0, 255)) or pass 16-bit images as uint16"
            )
        return array.astype(np.uint8)
    if low < 0 or high > 1:
        raise DataError(
            f"{name}: {array.dtype} pixel values from {low:g} to {high:g}, outside [0, 1]; "
            "floats are taken in [0, 1] (divide 0-255 values by 255)"
        )
    return np.round(array * 255).astype(np.uint8)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
