"""Bounds for the values a model file or an ONNX export's metadata carries, checked before use.

A model file is data from elsewhere: each value that sizes an allocation or picks a code path
(input and decode sizes, channels, normalisation, classes, test-time augmentation, int8 options,
the training options evaluation reuses: see ``ferlab.models.spec``) is checked here and refused
with a ModelError that names the file, the key and the problem.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Any

from ferlab.errors import ModelError
from ferlab.preprocessing import Preprocessing
from ferlab.tta_modes import TTA_MODES

SIZE_RANGE = (8, 1024)  # input and decode sizes, px per side
CHANNELS = (1, 3)
MAX_CLASSES = 1000
MAX_CLASS_NAME = 100
MAX_FLOAT_CONVS = 10_000
COLORS = ("gray", "rgb")


def _fail(file: Path, key: str, problem: str) -> ModelError:
    return ModelError(f"{file}: {key}: {problem}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checked_int(file: Path, key: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; bools and non-integral numbers are refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise _fail(file, key, f"expected a whole number, got {_short(value)}")
    if not low <= value <= high:
        raise _fail(file, key, f"{int(value)} is outside {low}-{high}")
    return int(value)


def _checked_float(file: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(file, key, f"expected a finite number, got {_short(value)}")
    return float(value)


def checked_bool(file: Path, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(file, key, f"expected true or false, got {_short(value)}")
    return value


def checked_text(file: Path, key: str, value: Any) -> str:
    """A name of 1-100 characters that prints as itself: no control or format characters (line
    breaks, terminal escapes), not blank, no spaces around it."""
    if not isinstance(value, str) or not value or len(value) > MAX_CLASS_NAME:
        raise _fail(file, key, f"expected a name of 1-{MAX_CLASS_NAME} characters")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in value):
        raise _fail(file, key, f"{_short(value)} holds control characters")
    if value != value.strip():
        raise _fail(file, key, f"{_short(value)} is blank or has spaces around it")
    return value


def checked_mapping(file: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(file, key, f"expected a mapping, got {type(value).__name__}")
    return value


def checked_classes(file: Path, value: Any) -> list[str]:
    """1-1000 distinct, non-empty class names."""
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_CLASSES:
        raise _fail(file, "classes", f"expected a list of 1-{MAX_CLASSES} class names")
    names = [checked_text(file, "classes", name) for name in value]
    if len(set(names)) != len(names):
        raise _fail(file, "classes", "names repeat")
    return names


def checked_preprocessing(file: Path, value: Any) -> Preprocessing:
    """Input size, channels (1 or 3) and one finite mean and positive std per channel."""
    data = checked_mapping(file, "preprocessing", value)
    missing = sorted({"input_size", "in_channels", "mean", "std"} - set(data))
    if missing:
        raise _fail(file, "preprocessing", f"missing {', '.join(missing)}")
    size = checked_int(file, "preprocessing.input_size", data["input_size"], *SIZE_RANGE)
    channels = data["in_channels"]
    if isinstance(channels, bool) or channels not in CHANNELS:
        raise _fail(file, "preprocessing.in_channels", f"expected 1 or 3, got {_short(channels)}")
    stats = {}
    for key in ("mean", "std"):
        values = data[key]
        if not isinstance(values, list | tuple) or len(values) != channels:
            raise _fail(file, f"preprocessing.{key}", f"expected {channels} number(s)")
        stats[key] = tuple(_checked_float(file, f"preprocessing.{key}", v) for v in values)
    if min(stats["std"]) <= 0:
        raise _fail(file, "preprocessing.std", "must be above 0")
    return Preprocessing(size, int(channels), stats["mean"], stats["std"])


def checked_tta(file: Path, value: Any) -> str | bool | None:
    """A test-time augmentation setting as ``ferlab.data.tta.tta_mode`` reads it."""
    if value is None or isinstance(value, bool) or value in TTA_MODES:
        return value
    raise _fail(file, "tta", f"expected one of {', '.join(TTA_MODES)}, got {_short(value)}")


def checked_decode(file: Path, image_size: Any, color: Any, where: str) -> tuple[int, str]:
    """The size (px) and colour mode crops are decoded at (keys ``<where>.image_size``, ...)."""
    size = checked_int(file, f"{where}.image_size", image_size, *SIZE_RANGE)
    if color not in COLORS:
        raise _fail(file, f"{where}.color", f"expected gray or rgb, got {_short(color)}")
    return size, str(color)


def checked_weight(file: Path, key: str, value: Any) -> float:
    """A positive, finite weight."""
    weight = _checked_float(file, key, value)
    if weight <= 0:
        raise _fail(file, key, f"{weight} must be above 0")
    return weight


def checked_fraction(file: Path, key: str, value: Any) -> float:
    """A share of the data in [0, 1)."""
    fraction = _checked_float(file, key, value)
    if not 0 <= fraction < 1:
        raise _fail(file, key, f"{fraction} is outside [0, 1)")
    return fraction


def checked_float_convs(file: Path, value: Any) -> int:
    return checked_int(file, "float_convs", value, 0, MAX_FLOAT_CONVS)
