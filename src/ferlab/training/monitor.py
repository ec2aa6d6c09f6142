"""Per-epoch records of a run: metrics, throughput and time spent waiting for data."""

from __future__ import annotations

import csv
import time
from typing import Any

import lightning as L

from ferlab.run_folder import RunFolder

EPOCH_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_f1",
    "lr",
    "images_per_s",
    "data_wait_frac",
    "epoch_s",
]
VA_COLUMNS = ["val_ccc_valence", "val_ccc_arousal", "val_score"]  # multi-task runs only


class EpochRecorder(L.Callback):
    """Appends one row per finished epoch to the run's metrics.csv; a resumed run drops later rows
    first.

    Throughput counts the training step only; ``data_wait_frac`` is the share of the epoch spent
    between the end of one step and the start of the next, i.e. waiting for the loader.
    ``extra``: further logged metrics to record, as columns after the standard ones.
    """

    def __init__(self, run: RunFolder, extra: tuple[str, ...] | list[str] = ()) -> None:
        self.run = run
        self.path = run.metrics
        self.columns = [*EPOCH_COLUMNS, *extra]
        self._reset()

    def _reset(self) -> None:
        self.samples = 0
        self.step_s = 0.0
        self.wait_s = 0.0
        self.epoch_start = time.perf_counter()
        self.batch_start = 0.0
        self.batch_end: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # after a resume, current_epoch is the first epoch to run
            self._truncate(trainer.current_epoch)

    def _truncate(self, first_epoch: int) -> None:
        if not self.path.is_file():
            return
        rows = [r for r in self.run.metrics_rows() if int(r["epoch"]) < first_epoch]
        self._write(rows, mode="w")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        new = mode == "w" or not self.path.is_file()
        with self.path.open(mode, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch_start = time.perf_counter()
        if self.batch_end is not None:
            self.wait_s += self.batch_start - self.batch_end

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.batch_end = time.perf_counter()
        self.step_s += self.batch_end - self.batch_start
        self.samples += len(batch[1])

    def stats(self) -> dict[str, float]:
        """Throughput of the epoch so far (images/s over step + wait time) and the wait share."""
        busy = self.step_s + self.wait_s
        return {
            "images_per_s": self.samples / busy if busy else 0.0,
            "data_wait_frac": self.wait_s / busy if busy else 0.0,
        }

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        optimizer = trainer.optimizers[0]
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "lr": max(group["lr"] for group in optimizer.param_groups),
            "epoch_s": round(time.perf_counter() - self.epoch_start, 3),
            **{k: round(v, 4) for k, v in self.stats().items()},
        }
        metric_columns = ["train_loss", "train_acc", "val_loss", "val_acc", "val_f1"]
        for name in metric_columns + self.columns[len(EPOCH_COLUMNS) :]:
            value = metrics.get(name, metrics.get(f"{name}_epoch"))
            row[name] = "" if value is None else round(value, 5)
        self._write([row], mode="a")
