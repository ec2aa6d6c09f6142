"""Any image source → an RGB uint8 array (H, W, 3), or a DataError naming the source.

Sources: a path, encoded bytes, a binary file object, a PIL image or a numpy array. Numpy arrays are
taken as OpenCV images, (H, W) gray or (H, W, 3|4) **BGR**/BGRA, unless ``rgb=True``; uint8, uint16
(scaled by 1/257), other integers in 0-255 and floats in [0, 1] are accepted; an alpha channel is
composited onto white, as for files. Decoded files get their EXIF rotation applied;
16-bit, CMYK, palette, gray and alpha images become plain RGB (alpha composited onto white). Files
over ``max_pixels`` are refused before decoding (decompression bombs), as are truncated files.
Files with a side over ``max_side`` are decoded reduced: JPEG at a smaller DCT scale, others shrunk
right after decoding; :func:`decode_cost` tells from the header how much memory that takes.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import cv2
import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from ferlab.errors import ConfigError, DataError
from ferlab.pixels import (
    WIDE_MODES,
    array_to_uint8,
    gray_to_rgb,
    onto_white,
    pil_to_rgb,
)

ImageSource: TypeAlias = str | os.PathLike | bytes | BinaryIO | Image.Image | np.ndarray
MAX_PIXELS = 80_000_000
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv")
# Modes PIL cannot shrink (or would average palette indices in) are converted first.
_SHRUNK_AS = {"1": "L", "PA": "RGBA", **{mode: "I" for mode in WIDE_MODES[1:5]}}
# Bytes per output pixel held at once after decoding: the shrunk image and its copies (EXIF
# rotation, RGB conversion: 4 bytes a pixel each in PIL) and the array (3); measured 12.8.
_AFTER_DECODE_BYTES = 16


class ImageTooLarge(DataError):
    """An image with more pixels than ferlab decodes (a decompression bomb, or over the limit)."""


@dataclass(frozen=True)
class DecodeCost:
    """An encoded image's ``size`` (width, height, as stored) and about the most memory, in
    bytes, that decoding it with :func:`load_image` takes at once."""

    size: tuple[int, int]
    peak_bytes: int


def source_name(source: ImageSource) -> str:
    """How messages refer to ``source``: its path, or its kind for in-memory images."""
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, bytes):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    rgb: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
) -> np.ndarray:
    """Decode or convert ``source`` to a contiguous RGB uint8 array (H, W, 3); an encoded image
    with a side over ``max_side`` comes back shrunk to fit it, its aspect ratio kept."""
    check_rgb(rgb)
    name = source_name(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, rgb=rgb, name=name)
    _check_kind(source, name)
    if isinstance(source, Image.Image):
        with _reading(name):
            return pil_to_rgb(source, name)
    opened = io.BytesIO(source) if isinstance(source, bytes) else source
    with _reading(name), Image.open(opened) as image:
        _check_pixels(image, name, max_pixels)
        return pil_to_rgb(_decoded(image, max_side), name)


def check_rgb(rgb: object) -> None:
    """ConfigError unless the ``rgb`` flag (arrays are RGB, not BGR) is True or False."""
    if not isinstance(rgb, bool | np.bool_):
        raise ConfigError(f"rgb: expected True or False, got {rgb!r}")


def check_image_source(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> None:
    """Raise the DataError that :func:`load_image` would for ``source`` (a wrong type, a missing
    file, a folder, a file that is no image, one over ``max_pixels``, an array of a wrong shape or
    pixel type), reading no more of a file than its header; binary streams and PIL images pass
    unchecked, and a file can still fail later while its pixels decode."""
    name = source_name(source)
    if isinstance(source, np.ndarray):
        _from_array(source, rgb=True, name=name)
        return
    _check_kind(source, name)
    if isinstance(source, str | os.PathLike | bytes):
        opened = io.BytesIO(source) if isinstance(source, bytes) else source
        with _reading(name), Image.open(opened) as image:
            _check_pixels(image, name, max_pixels)


def _check_kind(source: ImageSource, name: str) -> None:
    """A DataError for a source of no image type, a missing file or a folder."""
    if not isinstance(source, str | os.PathLike | bytes | Image.Image) and not hasattr(
        source, "read"
    ):
        raise DataError(
            f"{name}: expected a path, bytes, a binary file, a PIL image or a numpy array, "
            f"got {type(source).__name__}"
        )
    if isinstance(source, io.TextIOBase):
        raise DataError(f"{name}: a file opened as text; open it with open(path, 'rb')")
    if isinstance(source, str | os.PathLike) and not Path(source).is_file():
        if Path(source).is_dir():
            raise DataError(f"{name}: a folder, not an image file (ferlab predict reads folders)")
        raise DataError(f"{name}: no such file")
    empty = isinstance(source, bytes) and not source
    if empty or (isinstance(source, str | os.PathLike) and os.path.getsize(source) == 0):
        raise DataError(f"{name}: an empty file (0 bytes), not an image")


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(
            f"{name}: {image.width}x{image.height} image is over the "
            f"{max_pixels / 1e6:g} MP limit (decompression bomb?)"
        )


def decode_cost(data: bytes, *, max_side: int | None = None) -> DecodeCost:
    """What ``load_image(data, max_side=max_side)`` will take, read from the header alone."""
    with _reading(source_name(data)), Image.open(io.BytesIO(data)) as image:
        size, held, scale = image.size, _pixel_bytes(image.mode), 1.0
        if max_side is not None and max(size) > max_side:
            image.draft(None, (max_side, max_side))  # JPEG: the DCT scale thumbnail() picks
            scale = min(1.0, max_side / max(image.size))
            shrunk = _shrink_mode(image)
            held += 0 if shrunk == image.mode else _pixel_bytes(shrunk)
            held += 4 if "A" in ImageMode.getmode(shrunk).bands else 0  # premultiplied copy
        decoded = image.width * image.height
        return DecodeCost(size, round(decoded * (held + scale**2 * _AFTER_DECODE_BYTES)))


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """PIL's failures while opening or decoding ``name`` as one-line DataErrors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
            raise DataError(f"{name}: a video, not an image (use 'ferlab video')") from None
        raise DataError(f"{name}: not an image file (or a format PIL cannot read)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed[1]) / 1e6:,.0f} MP" if claimed else "more pixels than that"
        raise ImageTooLarge(
            f"{name}: refused as a decompression bomb (its header claims {size}; the limit is "
            f"{MAX_PIXELS / 1e6:g} MP)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{name}: cannot read image ({reason})") from None


def _decoded(image: Image.Image, max_side: int | None) -> Image.Image:
    """``image`` decoded; shrunk to fit ``max_side`` while decoding (JPEG) or right after."""
    if max_side is None or max(image.size) <= max_side:
        image.load()
        return image
    if _shrink_mode(image) != image.mode:
        image = image.convert(_shrink_mode(image))
    image.thumbnail((max_side, max_side), Image.Resampling.BOX, reducing_gap=1.0)
    return image


def _shrink_mode(image: Image.Image) -> str:
    """The mode ``image`` is shrunk in: its own, or one that PIL averages pixels in."""
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    return _SHRUNK_AS.get(image.mode, image.mode)


def _pixel_bytes(mode: str) -> int:
    """Bytes PIL stores a pixel of ``mode`` in (bands of 8 bits take 4 together)."""
    described = ImageMode.getmode(mode)
    return 4 if len(described.bands) > 1 else np.dtype(described.typestr).itemsize


def _from_array(array: np.ndarray, *, rgb: bool, name: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if (
        array.size == 0
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (3, 4))
    ):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = "; for a channels-first (C, H, W) array pass array.transpose(1, 2, 0)"
        elif array.ndim == 4:
            hint = "; for a batch of images pass a list of (H, W, 3) arrays"
        raise DataError(f"{name}: expected an (H, W) or (H, W, 3|4) array, got {array.shape}{hint}")
    if array.ndim == 2:
        return gray_to_rgb(array_to_uint8(array, name))
    colour = array_to_uint8(array[:, :, :3], name)
    if array.shape[2] == 4:
        colour = onto_white(colour, array_to_uint8(array[:, :, 3], name))
    if rgb:
        return np.ascontiguousarray(colour)
    return cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_BGR2RGB)
