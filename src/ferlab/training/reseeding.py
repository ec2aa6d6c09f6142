"""Dropout draws that depend on the batch's place in the run, so a resumed run repeats them."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ferlab.seeding import derived_seed


class SeedEachBatch(L.Callback):
    """Seeds torch (CPU and CUDA) before each training batch from (seed, epoch, batch, rank)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        place = (trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(derived_seed(self.seed, *place))
