"""Multi-task loss: cross-entropy on the expression plus weighted valence and arousal losses.

The regression loss is the mean squared error or 1 - CCC (Lin's concordance correlation
coefficient, population moments), over the samples whose value is present (``va_mask``); samples
without valence/arousal train the expression head only.
"""

from __future__ import annotations

import torch
from torch import nn

REGRESSION_LOSSES = ("mse", "ccc")


def concordance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CCC = 2 cov / (var_pred + var_target + (mean_pred - mean_target)^2), differentiable."""
    pred_mean, target_mean = pred.mean(), target.mean()
    covariance = ((pred - pred_mean) * (target - target_mean)).mean()
    denominator = pred.var(unbiased=False) + target.var(unbiased=False)
    denominator = denominator + (pred_mean - target_mean) ** 2
    return 2 * covariance / denominator.clamp_min(1e-8)


def regression_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str
) -> torch.Tensor:
    """MSE or 1 - CCC of one dimension over ``mask``; zero where too few values are present
    (none for MSE, fewer than two for CCC)."""
    pred, target = pred[mask], target[mask]
    if kind == "mse":
        return ((pred - target) ** 2).mean() if len(pred) else pred.new_zeros(())
    if kind == "ccc":
        return 1 - concordance(pred, target) if len(pred) > 1 else pred.new_zeros(())
    raise ValueError(f"unknown regression loss '{kind}'; available: {', '.join(REGRESSION_LOSSES)}")


class MultiTaskLoss(nn.Module):
    """``CE(logits, labels) + w_v * reg(valence) + w_a * reg(arousal)``; ``forward`` also returns
    the three parts, detached, for logging."""

    def __init__(
        self,
        *,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        regression: str = "ccc",
        valence_weight: float = 1.0,
        arousal_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if regression not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss '{regression}'")
        self.cross_entropy = nn.CrossEntropyLoss(
            weight=class_weights, label_smoothing=label_smoothing
        )
        self.regression = regression
        self.weights = (valence_weight, arousal_weight)

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        va_pred: torch.Tensor,
        va_true: torch.Tensor,
        va_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {"ce": self.cross_entropy(logits, labels)}
        total = parts["ce"]
        for k, (name, weight) in enumerate(zip(("valence", "arousal"), self.weights, strict=True)):
            parts[name] = regression_loss(
                va_pred[:, k].float(), va_true[:, k].float(), va_mask[:, k], self.regression
            )
            total = total + weight * parts[name]
        return total, {name: value.detach() for name, value in parts.items()}
