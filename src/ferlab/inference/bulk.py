"""Bulk prediction's inputs: a deterministic shard of the sorted input list, less what is done.

Inputs are listed lazily (``iter_images``) and results go straight to their output, so memory does
not grow with the number of files. ``--shard K/N`` keeps the inputs whose position in the sorted
list (or the list file's order) is K-1 modulo N: N machines given the same sources split them
with no coordination.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import sys
from collections.abc import Container, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from ferlab.errors import ConfigError, DataError
from ferlab.inference.batch import ImageFile, iter_images

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) → ``(K - 1, N)``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected K/N such as 1/4, got '{text}'") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard: need 1 <= K <= N, got {text}")
    return k - 1, n


def take_shard(items: Iterable[T], shard: tuple[int, int] | None) -> Iterator[T]:
    """Items number ``index``, ``index + count``, ...; all of them when ``shard`` is None."""
    if shard is None:
        return iter(items)
    index, count = shard
    return itertools.islice(items, index, None, count)


LIST_PROBE_BYTES = 1 << 16


def check_list_file(list_file: Path) -> None:
    """Raise DataError unless ``list_file`` (``-``: standard input, not checked) is a file whose
    start reads as UTF-8 text: a photo or an archive given to ``--list`` by mistake is refused
    before any output is opened."""
    if str(list_file) == "-":
        return
    if not list_file.is_file():
        raise DataError(
            f"{list_file}: no such file"
            if not list_file.exists()
            else f"{list_file}: not a file; --list takes a text file of paths"
        )
    with list_file.open("rb") as handle:
        head = handle.read(LIST_PROBE_BYTES)
    try:  # a character may be cut off at the end of a full probe
        decoder = codecs.getincrementaldecoder("utf-8")()
        text = decoder.decode(head, final=len(head) < LIST_PROBE_BYTES)
    except UnicodeDecodeError as exc:
        raise DataError(_not_text(list_file, exc.start)) from None
    if "\0" in text:
        raise DataError(_not_text(list_file, len(text[: text.index("\0")].encode())))


def _not_text(list_file: Path, offset: int | None = None) -> str:
    where = "" if offset is None else f" (byte {offset} is not UTF-8 text)"
    return f"{list_file}: not a text file of paths{where}; --list takes one image path a line"


def listed_images(list_file: Path) -> Iterator[ImageFile]:
    """The files named in ``list_file``, one path a line (``-``: standard input), lazily."""
    with contextlib.ExitStack() as stack:
        lines = (
            sys.stdin
            if str(list_file) == "-"
            else stack.enter_context(list_file.open(encoding="utf-8"))
        )
        try:
            for line in lines:
                if path := line.rstrip("\r\n"):
                    yield ImageFile(Path(path), Path(Path(path).name))
        except UnicodeDecodeError:
            raise DataError(_not_text(list_file)) from None


def pending_images(
    sources: Iterable[str],
    problems: list[str],
    *,
    list_file: Path | None = None,
    shard: tuple[int, int] | None = None,
    done: Container[str] = frozenset(),
) -> Iterator[ImageFile]:
    """The image files of ``sources``, then those of ``list_file``, in this shard and with a path
    not in ``done``, lazily."""
    files = iter_images(sources, problems)
    if list_file is not None:
        files = itertools.chain(files, listed_images(list_file))
    return (file for file in take_shard(files, shard) if str(file.path) not in done)
