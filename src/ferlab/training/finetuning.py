"""Transfer-learning strategies as a Lightning finetuning callback.

``frozen`` trains only the head; ``finetune`` trains everything (the backbone at a lower LR, set in
the optimizer's param groups); ``progressive`` trains the head first, then unfreezes backbone stages
from the top, one every ``unfreeze_every`` epochs. Every stage has its own param group from the
start, so OneCycleLR sees a fixed set of groups and a resumed run rebuilds the same state from the
epoch number alone.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer


class StagedUnfreeze(BaseFinetuning):
    """Freeze the backbone for ``frozen``/``progressive``, and unfreeze stages on schedule."""

    def __init__(
        self, strategy: str, stages_top_first: list[str], unfreeze_every: int, unfreeze_stages: int
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.stages = stages_top_first[:unfreeze_stages]
        self.unfreeze_every = unfreeze_every

    def unfreeze_epoch(self, stage_index: int) -> int:
        """The epoch at which the ``stage_index``-th stage from the top starts to train."""
        return (stage_index + 1) * self.unfreeze_every

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.strategy in ("frozen", "progressive"):
            self.freeze(pl_module.model.backbone, train_bn=False)

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if self.strategy != "progressive":
            return
        backbone = pl_module.model.backbone
        for index, stage in enumerate(self.stages):
            if epoch >= self.unfreeze_epoch(index):
                self.make_trainable(backbone.get_submodule(stage))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Param groups never change, so there is nothing to restore on resume."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
        for module in pl_module.model.backbone.modules():
            if isinstance(module, _BatchNorm):
                frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
                module.train(not frozen)
