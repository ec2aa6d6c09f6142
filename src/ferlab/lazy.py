"""Package attributes imported on first use, so that importing a package stays cheap."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each name of ``exports`` from the
    module it maps to, the first time it is asked for."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return getattr_


def lazy_dir(package: str, exports: dict[str, str]) -> Callable[[], list[str]]:
    """A module ``__dir__`` for ``package`` that lists the lazy ``exports`` beside what is
    already loaded, so that ``dir()`` and tab completion show the whole API."""

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return dir_
