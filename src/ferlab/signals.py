"""SIGINT and SIGTERM as exceptions: a stopped command unwinds, says so in one line, and exits
with the shell's code for the signal (130, 143).

Python raises KeyboardInterrupt on SIGINT; ``raise_stopped`` is the CLI's SIGTERM handler.
Training defers both to the next batch boundary (``ferlab.training.stopping``), so no checkpoint
is cut short.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal ended the command; ``detail`` says what it left behind (or None).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int, detail: str | None = None) -> None:
        super().__init__(signum, detail)
        self.signum = signum
        self.detail = detail

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        word = "interrupted" if self.signum == signal.SIGINT else "terminated"
        return f"{word}; {self.detail}" if self.detail else word


def raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """Data loader ``worker_init_fn``: leave stop signals to the main process, which ends its
    workers itself (a worker that died of Ctrl+C first would fail the batch in flight)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
