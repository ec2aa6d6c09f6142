"""How names that came from the file system are shown: a file name need not be UTF-8."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with the undecodable bytes of file names (surrogate escapes) shown as ``\\xNN``,
    so that printing it, drawing it in a figure or writing it as UTF-8 cannot fail."""
    raw = str(text).encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    """Whether ``name`` (as os.fsdecode gives it) is valid UTF-8 text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
