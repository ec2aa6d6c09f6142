"""Classification heads mapping ``(N, feature_dim)`` features to ``(N, num_classes)`` logits.

Heads live in a small registry so that new kinds (e.g. a multi-task head) can be added with
:func:`register_head` without touching the factory.  A head builder is called as
``builder(feature_dim, num_classes, dropout)`` and returns an ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ferlab.errors import ModelError

__all__ = ["HeadBuilder", "build_head", "list_heads", "register_head"]

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
