"""The LightningModule: model logic (loss, metrics, optimizer) apart from the training loop."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import ConcordanceCorrCoef

from ferlab.errors import DivergedError
from ferlab.models.registry import FERModel
from ferlab.training.losses import MultiTaskLoss

MIN_ONECYCLE_STEPS = 10  # below this a one-cycle schedule has no room for its phases: constant LR


class FERClassifier(L.LightningModule):
    """Cross-entropy training of a FERModel with per-stage learning rates.

    A valence/arousal model (``model.va``) trains on batches ``(images, labels, va, va_mask)``
    with :class:`MultiTaskLoss` and logs ``val_ccc_valence``, ``val_ccc_arousal`` (torchmetrics'
    CCC, sample variances) and ``val_score``, the mean of val accuracy and the two CCCs, which
    checkpointing and early stopping follow for such models.

    ``mixup`` (α > 0) blends each training batch with a shuffled copy of itself, images and
    targets alike, by a weight drawn from Beta(α, α) per batch (Zhang et al. 2018); ``train_acc``
    then scores each blend against the label of the image that weighs more in it.

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
        mixup: float = 0.0,
        class_weights: torch.Tensor | None = None,
        progressive: bool = False,
        channels_last: bool = True,
        va_loss: str = "ccc",
        valence_weight: float = 1.0,
        arousal_weight: float = 1.0,
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
        self.num_classes = num_classes
        self.mixup = mixup
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.multitask = None
        if model.va:
            self.multitask = MultiTaskLoss(
                class_weights=class_weights,
                label_smoothing=label_smoothing,
                regression=va_loss,
                valence_weight=valence_weight,
                arousal_weight=arousal_weight,
            )
            self.val_ccc = nn.ModuleDict(
                {name: ConcordanceCorrCoef() for name in ("valence", "arousal")}
            )

    def _outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model.split(self.model.outputs(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._outputs(images)[0]

    def _step(
        self, batch: tuple[torch.Tensor, ...], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, labels); a batch ``(images, labels, distributions)`` trains against
        the distributions (soft cross-entropy); for a multi-task model also logs the parts of the
        loss and feeds the val CCCs."""
        images, labels = batch[0], batch[1]
        if self.multitask is None and self.mixup > 0 and stage == "train":
            targets = batch[2] if len(batch) == 3 else F.one_hot(labels, self.num_classes).float()
            images, targets, dominant = self._mixed(images, targets)
            logits = self._outputs(images)[0]
            return self.criterion(logits, targets), logits, labels[dominant]
        logits, va_pred = self._outputs(images)
        if self.multitask is None or va_pred is None:
            targets = batch[2] if len(batch) == 3 else labels
            return self.criterion(logits, targets), logits, labels
        va_true, va_mask = batch[2], batch[3]
        loss, parts = self.multitask(logits, labels, va_pred, va_true, va_mask)
        self.log_dict(
            {f"{stage}_{name}_loss": value for name, value in parts.items()},
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        if stage == "val":
            for k, metric in enumerate(self.val_ccc.values()):
                present = va_mask[:, k]
                if present.any():
                    metric.update(va_pred[present, k].float(), va_true[present, k].float())
        return loss, logits, labels

    def _mixed(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixup: ``lam * batch + (1 - lam) * shuffled batch`` for images and target
        distributions, ``lam ~ Beta(mixup, mixup)``, from torch's seeded generator; also the
        index of the image that weighs more in each blend."""
        alpha = torch.tensor(float(self.mixup))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        order = torch.randperm(images.shape[0], device=images.device)
        mixed = images.mul(lam).add_(images[order], alpha=1 - lam)
        dominant = order if lam < 0.5 else torch.arange(len(order), device=order.device)
        return mixed, targets.mul(lam).add_(targets[order], alpha=1 - lam), dominant

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._step(batch, "train")
        if not torch.isfinite(loss.detach()):
            epoch, value = self.current_epoch + 1, float(loss.detach())
            raise DivergedError(
                f"the training loss became {value:g} in epoch {epoch}, batch {batch_idx + 1}: "
                "training diverged"
            )
        self.train_acc(logits, labels)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch, "val")
        self.val_acc(logits, labels)
        self.val_f1(logits, labels)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True)
        self.log("val_f1", self.val_f1)

    def on_validation_epoch_end(self) -> None:
        if self.multitask is None:
            return
        scores = [self.val_acc.compute().float()]
        for name, metric in self.val_ccc.items():
            ccc = metric.compute().float().reshape(()) if metric.update_called else None
            metric.reset()
            if ccc is None or not torch.isfinite(ccc):
                continue
            self.log(f"val_ccc_{name}", ccc)
            scores.append(ccc)
        self.log("val_score", torch.stack(scores).mean(), prog_bar=True)

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
