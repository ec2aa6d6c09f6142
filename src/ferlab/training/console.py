"""The training console: what data was read, then per epoch a progress bar ("epoch k/N", with the
time left for the whole session) and one line of metrics when it ends."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from typing import Any

import lightning as L

from ferlab.progress import Bar, bar

LIGHTNING_LINES = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "LOCAL_RANK:",
    "Loading `train_dataloader` to estimate",
    "`Trainer.fit` stopped:",
)
"""Starts of the lines Lightning logs around a fit (its hardware banner, its batch count, why it
stopped); ferlab's console leaves them out (the accelerator is in config.yaml)."""


def data_summary(prepared: Any) -> str:
    """Classes, what reading left out (where it did), images per split, decode size and cache
    use of a ``training.run.PreparedRun``, one line each."""
    config, datamodule = prepared.config, prepared.datamodule
    names = prepared.mapping.names
    counts = ", ".join(f"{split} {len(data.labels)}" for split, data in datamodule.splits.items())
    test = prepared.source.splits.get("test")
    if test is not None and "test" not in datamodule.splits:
        held_out = sum(prepared.mapping.label_of(label) is not None for label in test.labels)
        counts += f", test {held_out} held out"
    limits = []
    if config.limit_per_class is not None:
        limits.append(f"train at most {config.limit_per_class} per class")
    if config.limit is not None:
        limits.append(f"train limited to {config.limit}")
    cached = [split for split, hit in prepared.cached.items() if hit]
    cache = f"from the cache ({', '.join(cached)})" if cached else "decoded now, cached for later"
    note = prepared.source.loading_note()
    return "\n".join(
        [
            f"data: {prepared.source.root} ({prepared.source.kind}), {len(names)} classes: "
            f"{', '.join(names)}",
            *([f"data: {note}"] if note else []),
            f"images: {counts}" + (f" ({'; '.join(limits)})" if limits else ""),
            f"pixels: {config.image_size}x{config.image_size} {config.color}, model input "
            f"{prepared.prep.input_size}x{prepared.prep.input_size}; {cache}",
        ]
    )


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class TrainingConsole(L.Callback):
    """Rank zero's console while fitting: a bar per epoch with the loss and the session's total
    time left, then a line of the epoch's metrics (the CSV and TensorBoard logs are unchanged)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.batches_done = 0
        self.epoch_started = 0.0
        self.bar: contextlib.ExitStack | None = None
        self.line: Bar | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.epoch_started = time.perf_counter()
        self.bar = contextlib.ExitStack()
        label = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        total = trainer.num_training_batches
        self.line = self.bar.enter_context(
            bar(label, total if total != float("inf") else None, unit="batches")
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        self.batches_done += 1
        if self.line is None:
            return
        self.line.advance()
        loss = trainer.callback_metrics.get("train_loss_step")
        shown = [] if loss is None else [f"loss {float(loss):.3f}"]
        left = self._time_left(trainer, index + 1)
        self.line.note(", ".join([*shown, *([f"total left {_clock(left)}"] if left else [])]))

    def _time_left(self, trainer: L.Trainer, done_in_epoch: int) -> float | None:
        """Seconds left in the session, at the pace so far (validation included)."""
        per_epoch = trainer.num_training_batches
        if not self.batches_done or per_epoch == float("inf"):
            return None
        epochs_left = (trainer.max_epochs or 0) - trainer.current_epoch
        remaining = epochs_left * per_epoch - done_in_epoch
        return (time.perf_counter() - self.started) / self.batches_done * remaining

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._close()
        metrics = [
            (name, float(value))
            for name, value in sorted(trainer.callback_metrics.items())
            if not name.endswith(("_step", "_epoch")) and value.numel() == 1
        ]
        shown = "  ".join(f"{name} {value:.4f}" for name, value in metrics)
        spent = time.perf_counter() - self.epoch_started
        left = self._time_left(trainer, trainer.num_training_batches)
        tail = f"{_clock(spent)}" + (f", total left {_clock(left)}" if left else "")
        epoch = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        print(f"{epoch}  {shown}  ({tail})", flush=True)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.line = None, None
