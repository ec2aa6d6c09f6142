"""Decode a split once into a uint8 tensor and keep it on disk, keyed by the file list.

FER-sized data (35,887 × 48×48) fits in about 80 MiB, so an epoch never decodes an image again:
augmentation works on the cached tensors.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ferlab.cache_dir import default_cache_dir
from ferlab.data.tables import SplitTable, unreadable_reason
from ferlab.errors import DataError
from ferlab.pixels import pil_to_rgb
from ferlab.progress import track

CACHE_FORMAT = 2  # 2: files decoded as prediction decodes them (EXIF, 16-bit, alpha)
MAX_IMAGE_PIXELS = 64_000_000


@dataclass
class DecodedSplit:
    """A split's pixels at cache resolution, and which rows of the table they came from."""

    images: torch.Tensor  # uint8 (N, C, S, S)
    rows: torch.Tensor  # int64 (N,) indices into the SplitTable
    skipped: list[tuple[str, str]]


def cache_key(table: SplitTable, image_size: int, color: str) -> str:
    """A digest of what determines the decoded tensor: the files (paths, sizes, modification
    times) or the CSV, the cache size and the colour mode; a rewritten file gets a new key."""
    digest = hashlib.sha256(f"v{CACHE_FORMAT}|{image_size}|{color}|{table.origin}".encode())
    if table.paths is not None:
        for path in table.paths:
            stat = os.stat(path)
            digest.update(os.fsencode(path))
            digest.update(f"|{stat.st_size}|{stat.st_mtime_ns}\0".encode())
    if table.pixels is not None:
        origin = Path(table.origin)
        if origin.is_file():
            stat = origin.stat()
            digest.update(f"{stat.st_size}|{stat.st_mtime_ns}".encode())
        digest.update(np.ascontiguousarray(table.pixels[:: max(1, len(table) // 256)]).tobytes())
        digest.update(str(len(table)).encode())
    return digest.hexdigest()[:24]


def cache_file(
    table: SplitTable, image_size: int, color: str, cache_dir: Path | None = None
) -> Path:
    """Where ``table``'s decoded pixels are (or will be) cached."""
    directory = cache_dir or default_cache_dir()
    return directory / f"{table.name}-{cache_key(table, image_size, color)}.pt"


def decode_file(path: Path, image_size: int, mode: str) -> np.ndarray:
    """One image file at ``image_size`` in ``mode`` (L or RGB), its pixels read as prediction
    reads them (:func:`ferlab.pixels.pil_to_rgb`: EXIF rotation, 16-bit, alpha onto white)."""
    with Image.open(path) as image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{image.width}x{image.height} pixels is too large")
        image.load()
        try:
            rgb = pil_to_rgb(image, str(path))
        except DataError as exc:
            raise ValueError(str(exc).removeprefix(f"{path}: ")) from None
    converted = Image.fromarray(rgb)
    if mode != "RGB":
        converted = converted.convert(mode)
    if converted.size != (image_size, image_size):
        converted = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_pixels(pixels: np.ndarray, image_size: int, channels: int) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).unsqueeze(1)
    if images.shape[-1] != image_size:
        images = torch.nn.functional.interpolate(
            images.float(), size=(image_size, image_size), mode="bilinear", antialias=True
        )
        images = images.round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, channels, -1, -1).contiguous()


def _decode_table(table: SplitTable, image_size: int, color: str, on_bad_file: str) -> DecodedSplit:
    channels = 1 if color == "gray" else 3
    if table.pixels is not None:
        images = _decode_pixels(table.pixels, image_size, channels)
        return DecodedSplit(images, torch.arange(len(table)), [])
    assert table.paths is not None
    mode = "L" if color == "gray" else "RGB"
    images = np.empty((len(table), channels, image_size, image_size), dtype=np.uint8)
    rows: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index, path in enumerate(track(table.paths, f"decode {table.name}", unit="images")):
        try:
            images[len(rows)] = decode_file(path, image_size, mode)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            reason = unreadable_reason(exc, path)
            if on_bad_file == "error":
                raise DataError(f"{path}: cannot read image ({reason})") from None
            skipped.append((str(path), reason))
            continue
        rows.append(index)
    return DecodedSplit(
        torch.from_numpy(images[: len(rows)].copy()), torch.tensor(rows, dtype=torch.long), skipped
    )


def decode_split(
    table: SplitTable,
    *,
    image_size: int,
    color: str = "gray",
    on_bad_file: str = "skip",
    cache_dir: Path | None = None,
) -> DecodedSplit:
    """Decoded pixels of ``table``; from the on-disk cache when this file list was seen before."""
    file = cache_file(table, image_size, color, cache_dir)
    directory = file.parent
    if file.is_file() and zipfile.is_zipfile(file):
        try:
            stored = torch.load(file, map_location="cpu", weights_only=True)
            decoded = DecodedSplit(stored["images"], stored["rows"], list(stored["skipped"]))
        except Exception:  # a stale or damaged cache file is rebuilt, never trusted
            decoded = None
        if decoded is not None and (on_bad_file == "skip" or not decoded.skipped):
            _warn_skipped(table, decoded.skipped)
            return decoded
    decoded = _decode_table(table, image_size, color, on_bad_file)
    directory.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(f".{os.getpid()}.tmp")
    torch.save(
        {"images": decoded.images, "rows": decoded.rows, "skipped": decoded.skipped}, partial
    )
    os.replace(partial, file)
    _warn_skipped(table, decoded.skipped)
    return decoded


def _warn_skipped(table: SplitTable, skipped: list[tuple[str, str]]) -> None:
    if not skipped:
        return
    first = "; ".join(f"{Path(name).name}: {reason}" for name, reason in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    warnings.warn(
        f"{table.origin}: skipped {len(skipped)} unreadable file(s) in {table.name}: {first}{more}",
        stacklevel=3,
    )
