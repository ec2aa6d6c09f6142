"""Heads mapping ``(N, feature_dim)`` features to ``(N, num_classes)`` logits.

Heads live in a small registry so that new kinds can be added with :func:`register_head` without
touching the factory.  A head builder is called as ``builder(feature_dim, num_classes, dropout)``
and returns an ``nn.Module``.  A head whose ``predicts_va`` attribute is true (``multitask``)
returns ``(N, num_classes + 2)``: the logits, then valence and arousal in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ferlab.errors import ModelError

__all__ = ["HeadBuilder", "MultiTaskHead", "build_head", "list_heads", "register_head"]

HeadBuilder = Callable[[int, int, float], nn.Module]

_HEADS: dict[str, HeadBuilder] = {}


def register_head(name: str) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator registering a head builder under ``name`` (duplicates are a ``ValueError``)."""

    def decorator(builder: HeadBuilder) -> HeadBuilder:
        if name in _HEADS:
            raise ValueError(f"head '{name}' is already registered")
        _HEADS[name] = builder
        return builder

    return decorator


def list_heads() -> list[str]:
    """Sorted names of all registered heads."""
    return sorted(_HEADS)


def build_head(name: str, feature_dim: int, num_classes: int, dropout: float) -> nn.Module:
    """Build head ``name``; an unknown name raises :class:`ModelError` listing the known ones."""
    try:
        builder = _HEADS[name]
    except (KeyError, TypeError):
        available = ", ".join(list_heads())
        raise ModelError(f"unknown head '{name}'; available: {available}") from None
    return builder(feature_dim, num_classes, dropout)


@register_head("linear")
def linear_head(feature_dim: int, num_classes: int, dropout: float) -> nn.Module:
    """``Dropout(dropout) -> Linear(feature_dim, num_classes)``."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))


@register_head("mlp")
def mlp_head(feature_dim: int, num_classes: int, dropout: float) -> nn.Module:
    """Two hidden layers (512, 256) with batch norm, as in the original FER transfer scripts.

    ``BN -> Linear(feature_dim, 512) -> ReLU -> Dropout(dropout) -> BN -> Linear(512, 256) ->
    ReLU -> Dropout(0.6 * dropout) -> Linear(256, num_classes)``; with the default dropout 0.5
    the second dropout is 0.3.  The batch norms need batches of at least 2 in training mode.
    """
    return nn.Sequential(
        nn.BatchNorm1d(feature_dim),
        nn.Linear(feature_dim, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.BatchNorm1d(512),
        nn.Linear(512, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.6 * dropout),
        nn.Linear(256, num_classes),
    )


class MultiTaskHead(nn.Module):
    """Expression logits plus valence and arousal from one shared layer.

    ``Dropout(dropout) -> Linear(feature_dim, 512) -> BN -> ReLU`` is shared; the expression
    branch is ``Linear(512, 256) -> ReLU -> Dropout(0.6 * dropout) -> Linear(256, num_classes)``,
    valence and arousal each ``Linear(512, 128) -> ReLU -> Linear(128, 1) -> tanh``.
    """

    predicts_va = True

    def __init__(self, feature_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.shared = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(feature_dim, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
        )
        self.expression = nn.Sequential(
            nn.Linear(512, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.6 * dropout),
            nn.Linear(256, num_classes),
        )
        self.valence = _regression_branch()
        self.arousal = _regression_branch()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        shared = self.shared(features)
        return torch.cat(
            [self.expression(shared), self.valence(shared), self.arousal(shared)], dim=1
        )


def _regression_branch() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 128), nn.ReLU(inplace=True), nn.Linear(128, 1), nn.Tanh())


@register_head("multitask")
def multitask_head(feature_dim: int, num_classes: int, dropout: float) -> nn.Module:
    """:class:`MultiTaskHead`: expression logits, valence and arousal."""
    return MultiTaskHead(feature_dim, num_classes, dropout)
