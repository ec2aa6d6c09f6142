"""Progress of long work, in one style, on stderr.

Library code marks its long loops with :func:`track` or :func:`bar`; they show nothing unless a
command turned progress on with :func:`shown` (the CLI does, unless ``--quiet``) and stderr is a
terminal. Bars opened while another is running share its display, one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")

_ENABLED: ContextVar[bool] = ContextVar("ferlab_progress", default=False)


class _Display:
    """The one rich display that the open bars share; started with the first, stopped with the
    last."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.open = 0

    def start(self) -> Progress:
        if self.progress is None:
            self.progress = _new_progress()
            self.progress.start()
        self.open += 1
        return self.progress

    def stop(self) -> None:
        self.open -= 1
        if self.open == 0 and self.progress is not None:
            self.progress.stop()
            self.progress = None


_DISPLAY = _Display()


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: no progress bars (they are off anyway where stderr is not a terminal)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars on stderr")


def is_shown() -> bool:
    """Whether bars are drawn here: turned on by :func:`shown` and stderr is a terminal."""
    return _ENABLED.get() and sys.stderr.isatty()


@contextlib.contextmanager
def shown(enabled: bool = True) -> Iterator[None]:
    """Show the bars that the work inside the block opens (where stderr is a terminal)."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


class Bar:
    """One line of progress: ``advance`` it by items done; ``note`` sets the text after its
    label (counts of a second kind, such as faces)."""

    def __init__(self, progress: Progress | None, label: str, total: int | None, unit: str):
        self.progress = progress
        self.label = label
        self.task = None if progress is None else progress.add_task(label, total=total, unit=unit)

    def advance(self, count: int = 1) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, count)

    def note(self, text: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=f"{self.label} ({text})")


@contextlib.contextmanager
def bar(label: str, total: int | None = None, *, unit: str = "items") -> Iterator[Bar]:
    """A bar for ``total`` items (None: unknown, the count alone is shown) while the block runs."""
    if not is_shown():
        yield Bar(None, label, total, unit)
        return
    progress = _DISPLAY.start()
    line = Bar(progress, label, total, unit)
    try:
        yield line
    finally:
        if line.task is not None:
            progress.remove_task(line.task)
        _DISPLAY.stop()


def track(
    items: Iterable[T], label: str, total: int | None = None, *, unit: str = "items"
) -> Iterator[T]:
    """``items`` one by one, with a bar advanced past each (``total`` defaults to ``len(items)``
    where it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(label, total, unit=unit) as line:
        for item in items:
            yield item
            line.advance()


def _new_progress() -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            unit: Any = task.fields.get("unit", "items")
            return Text(f"{task.speed:.1f} {unit}/s" if task.speed else f"- {unit}/s")

    class Count(MofNCompleteColumn):
        def render(self, task: Task) -> Text:
            if task.total is None:
                return Text(f"{int(task.completed)} {task.fields.get('unit', '')}".rstrip())
            return super().render(task)

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        Count(),
        Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        redirect_stdout=sys.stdout.isatty(),
        transient=True,
    )
