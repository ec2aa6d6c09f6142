"""How faces are found, cropped and viewed before the model sees them: one set of options for the
Recognizer, heatmaps and the web service, whose fields also describe the command-line flags.

Free of PyTorch and OpenCV, so that building the command-line parser stays light.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

from ferlab.errors import ConfigError
from ferlab.tta_modes import tta_mode

# A FER2013 crop is about as tall as libfacedetection's box around the same face (median frame
# side / box height 0.985 on 588 FER2013 test faces) and centred on it, hence no margin.
DEFAULT_MARGIN = 0.0

# Longer side images are shrunk to for detection: libfacedetection's time grows with the pixel
# count, and its recall of small faces falls with the size (MODEL_CARD.md, detector table).
DEFAULT_DETECT_SIDE = 480
MAX_MARGIN = 1.0
"""The widest crop border: a square three times the face box's side, the face a ninth of it."""
_PIXEL_FIELDS = ("min_face", "detect_side")


@dataclass(frozen=True)
class FaceOptions:
    """``detect=False`` takes each image as one face crop. ``min_face``: smallest face side in
    pixels; ``min_score``: smallest detector confidence kept; ``margin``: extra crop border per
    side as a fraction of the face box; ``detect_side``: images with a longer side are shrunk to it
    for detection only (detection time grows with the pixel count; faces are still cropped from
    the full image); ``tta``: average the probabilities over views of each crop: "none", "flip"
    (True: it and its mirror image), "shift" (10 views; see ``ferlab.data.tta``); None: as the
    model file says (flip for the shipped model).

    Each field's ``metadata`` holds its flag's help text and metavar.
    """

    detect: bool = field(default=True, metadata={"help": "take each image as one face crop"})
    min_face: int = field(default=24, metadata={"help": "smallest face side", "metavar": "PX"})
    min_score: float = field(
        default=0.6,
        metadata={"help": "smallest detector confidence kept, 0-1", "metavar": "P"},
    )
    margin: float = field(
        default=DEFAULT_MARGIN,
        metadata={
            "help": "extra crop border per side, as a fraction of the face box (0-1)",
            "metavar": "F",
        },
    )
    detect_side: int = field(
        default=DEFAULT_DETECT_SIDE,
        metadata={
            "help": "larger images are shrunk to this longer side for detection only; raise it "
            "for small faces in big photos",
            "metavar": "PX",
        },
    )
    tta: str | bool | None = None

    def __post_init__(self) -> None:
        checks = (
            ("min_face", lambda v: 1 <= v < math.inf, "a number of at least 1 (px)"),
            ("margin", lambda v: 0 <= v <= MAX_MARGIN, f"a number in [0, {MAX_MARGIN:g}]"),
            ("min_score", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            ("detect_side", lambda v: 32 <= v < math.inf, "a number of at least 32 (px)"),
        )
        if not isinstance(self.detect, bool):
            raise ConfigError(f"detect: expected True or False, got {self.detect!r}")
        for name, ok, allowed in checks:
            value = getattr(self, name)
            flag = name.replace("_", "-")
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (number and ok(value)):
                raise ConfigError(f"{name} (--{flag}) must be {allowed}, got {value!r}")
            if name in _PIXEL_FIELDS and value != int(value):
                raise ConfigError(
                    f"{name} (--{flag}) must be a whole number of pixels, got {value!r}"
                )
            object.__setattr__(self, name, int(value) if name in _PIXEL_FIELDS else float(value))
        if self.tta is not None:
            object.__setattr__(self, "tta", tta_mode(self.tta))

    def replace(self, **changes: object) -> FaceOptions:
        """A copy with ``changes`` (field names and values); an unknown name is a ConfigError."""
        check_option_names(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def check_option_names(names: Iterable[str], also: tuple[str, ...] = ()) -> None:
    """ConfigError listing the valid keywords (``also``, then the face options) where one of
    ``names`` is neither."""
    fields = [item.name for item in dataclasses.fields(FaceOptions)]
    unknown = sorted(set(names) - set(fields) - set(also))
    if unknown:
        raise ConfigError(
            f"unknown face option(s) {', '.join(unknown)}; valid keywords: "
            f"{', '.join([*also, *fields])}"
        )
