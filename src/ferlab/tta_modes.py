"""The test-time augmentation modes by name, free of PyTorch so that option parsing stays light.

The views each mode averages over are made by :func:`ferlab.data.tta.tta_views`.
"""

from __future__ import annotations

from ferlab.errors import ConfigError

TTA_MODES = ("none", "flip", "shift")


def tta_mode(value: str | bool | None) -> str:
    """The mode a setting names; ``True`` (how model files recorded flip averaging) is "flip",
    ``False`` and ``None`` are "none"."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "flip"
    if value not in TTA_MODES:
        raise ConfigError(f"tta: unknown mode '{value}'; available: {', '.join(TTA_MODES)}")
    return str(value)
