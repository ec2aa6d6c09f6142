"""Where ferlab keeps what it can make again: decoded data sets, ONNX exports, weight files."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$FERLAB_CACHE``, else ``$XDG_CACHE_HOME/ferlab`` (``~/.cache/ferlab``)."""
    base = os.environ.get("FERLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ferlab"
    )
    return Path(base)
