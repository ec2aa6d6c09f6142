"""Stop training on SIGINT or SIGTERM at the next batch boundary, never inside a checkpoint."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import lightning as L

from ferlab.signals import STOP_SIGNALS, Stopped


class StopAtBatchBoundary(L.Callback):
    """While entered, a stop signal is noted and raised as ``Stopped`` at the next batch (training
    or validation); a second signal raises at once. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopAtBatchBoundary:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Stopped(signum)
        self.signum = signum

    def _check(self) -> None:
        if self.signum is not None:
            raise Stopped(self.signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._check()

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._check()
