"""The LightningModule: model logic (loss, metrics, optimizer) apart from the training loop."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ferlab.models.registry import FERModel

MIN_ONECYCLE_STEPS = 10  # below this a one-cycle schedule has no room for its phases: constant LR


class FERClassifier(L.LightningModule):
    """Cross-entropy training of a FERModel with per-stage learning rates.

    ``channels_last`` memory format speeds convolutions up on CPUs and tensor cores alike.
    Param groups: the head at ``lr``; backbone stages from the top at
    ``lr * backbone_lr_factor * stage_lr_decay**k``; backbone parameters outside the named stages
    share the lowest of those rates.
    """

    def __init__(
        self,
        model: FERModel,
        num_classes: int,
        *,
        lr: float = 1e-3,
        backbone_lr_factor: float = 0.1,
        stage_lr_decay: float = 0.5,
        weight_decay: float = 0.05,
        scheduler: str = "onecycle",
        label_smoothing: float = 0.1,
        class_weights: torch.Tensor | None = None,
        progressive: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.lr = lr
        self.backbone_lr_factor = backbone_lr_factor
        self.stage_lr_decay = stage_lr_decay
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.progressive = progressive
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        self.train_acc(logits, labels)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc(logits, labels)
        self.val_f1(logits, labels)
        self.log("val_loss", self.criterion(logits, labels), prog_bar=True, sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True)
        self.log("val_f1", self.val_f1)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: head, then backbone stages top-first, then the rest of the backbone."""
        backbone = self.model.backbone
        base = self.lr * self.backbone_lr_factor
        groups: list[dict[str, Any]] = [
            {"name": "head", "params": list(self.model.head.parameters()), "lr": self.lr}
        ]
        seen: set[int] = set()
        if self.progressive:
            for depth, stage in enumerate(reversed(self.model.info.stages)):
                params = [
                    p for p in backbone.get_submodule(stage).parameters() if id(p) not in seen
                ]
                seen.update(id(p) for p in params)
                lr = base * self.stage_lr_decay**depth
                groups.append({"name": f"backbone.{stage}", "params": params, "lr": lr})
        rest = [p for p in backbone.parameters() if id(p) not in seen]
        if rest:
            lowest = min(g["lr"] for g in groups[1:]) if len(groups) > 1 else base
            groups.append({"name": "backbone", "params": rest, "lr": lowest})
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        total_steps = int(self.trainer.estimated_stepping_batches)
        if self.scheduler == "onecycle" and total_steps >= MIN_ONECYCLE_STEPS:
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps, pct_start=0.2
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"},
            }
        if self.scheduler == "plateau":
            schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=0.5, patience=2
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "monitor": "val_loss", "interval": "epoch"},
            }
        return optimizer
