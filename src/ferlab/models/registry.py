"""One model registry and one factory, in the spirit of timm's ``_registry.py``/``create_model``.

A model is registered with its :class:`ModelInfo` and a *backbone builder*: a function
``builder(pretrained_state: dict | None) -> (backbone, feature_dim)`` that returns a module
mapping ``(N, C, H, W)`` images to ``(N, feature_dim)`` pooled, flattened features, with
``pretrained_state`` (when not ``None``) already loaded into it.  :func:`create_model` puts a
head on top (see :mod:`ferlab.models.heads`) and returns a :class:`FERModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferlab.errors import ConfigError, ModelError
from ferlab.suggest import did_you_mean

from .heads import build_head, list_heads
from .info import ModelInfo
from .weights import StateMismatch, describe_pretrained, resolve_pretrained_state

__all__ = [
    "BackboneBuilder",
    "FERModel",
    "FaceClassifier",
    "ModelInfo",
    "check_input_size",
    "create_model",
    "get_builder",
    "list_models",
    "model_info",
    "register_model",
]

BackboneBuilder = Callable[[dict[str, Any] | None], tuple[nn.Module, int]]


class FaceClassifier(nn.Module):
    """What every model gives, one architecture or an ensemble.

    ``forward`` gives class logits ``(N, num_classes)`` whatever the head, so classification code
    (evaluation, Grad-CAM, comparison) works on every model; ``outputs`` gives the whole output:
    for a valence/arousal model (``va``) ``(N, num_classes + 2)``, the logits followed by valence
    and arousal in [-1, 1] (the layout training, ONNX export and inference rely on).
    """

    num_classes: int
    va: bool
    info: ModelInfo
    backbone: nn.Module

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``outputs`` → (logits ``(N, num_classes)``, valence/arousal ``(N, 2)`` or None)."""
        if not self.va:
            return outputs, None
        return outputs[:, : self.num_classes], outputs[:, self.num_classes :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(self.outputs(x))[0]


class FERModel(FaceClassifier):
    """A backbone producing pooled features and a head on top."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        feature_dim: int,
        info: ModelInfo,
        *,
        num_classes: int,
        head_name: str,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = feature_dim
        self.info = info
        self.num_classes = num_classes
        self.head_name = head_name
        self.va = bool(getattr(head, "predicts_va", False))

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output: logits, then valence and arousal for a ``va`` model."""
        return self.head(self.backbone(x))


_REGISTRY: dict[str, tuple[ModelInfo, BackboneBuilder]] = {}


def register_model(info: ModelInfo) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator registering a backbone builder under ``info.name``.

    Registering the same name twice or an inconsistent ``info`` is a programming error
    (``ValueError``), not a user error.
    """
    if not info.name:
        raise ValueError("model name must not be empty")
    if not (len(info.mean) == len(info.std) == info.in_channels):
        raise ValueError(f"model '{info.name}': mean/std must have in_channels entries")
    if not info.stages:
        raise ValueError(f"model '{info.name}': stages must not be empty")

    def decorator(builder: BackboneBuilder) -> BackboneBuilder:
        if info.name in _REGISTRY:
            raise ValueError(f"model '{info.name}' is already registered")
        _REGISTRY[info.name] = (info, builder)
        return builder

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[ModelInfo, BackboneBuilder]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        hint = did_you_mean(name, list_models()) if isinstance(name, str) else ""
        available = ", ".join(list_models())
        raise ModelError(f"unknown model '{name}'{hint} (available: {available})") from None


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model; unknown name -> :class:`ModelError`."""
    return _lookup(name)[0]


def get_builder(name: str) -> BackboneBuilder:
    """The backbone builder of a registered model; unknown name -> :class:`ModelError`."""
    return _lookup(name)[1]


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool | str | Path = False,
    head: str = "linear",
    dropout: float = 0.5,
) -> FERModel:
    """Build model ``name`` with a ``head`` for ``num_classes`` classes.

    ``pretrained``: ``False`` random init; ``True`` the pretrained weights named in
    :attr:`ModelInfo.pretrained_weights` (a local file first, then download); a path: a local
    state dict of the full torchvision model or of our backbone.  All problems the user can fix
    (unknown model or head, missing or unfitting weights) raise :class:`ModelError`.
    """
    info, builder = _lookup(name)
    if head not in list_heads():
        available = ", ".join(list_heads())
        raise ModelError(f"unknown head '{head}'; available: {available}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")

    state = resolve_pretrained_state(info, pretrained)
    try:
        backbone, feature_dim = builder(state)
    except StateMismatch as exc:
        source = describe_pretrained(info, pretrained)
        raise ModelError(f"weights {source} do not fit model '{name}': {exc}") from None
    head_module = build_head(head, feature_dim, num_classes, float(dropout))
    return FERModel(
        backbone, head_module, feature_dim, info, num_classes=num_classes, head_name=head
    )


def check_input_size(model: FaceClassifier, input_size: int, in_channels: int) -> None:
    """ConfigError where ``model`` cannot take square inputs of ``input_size`` px (too small for
    its strides and kernels, or not the one size it takes), found by running a blank image."""
    blank = torch.zeros(1, in_channels, input_size, input_size)
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(blank)
    except (RuntimeError, AssertionError) as exc:  # a map smaller than a kernel; ViT's size
        lines = str(exc).strip().splitlines()
        problem = f" ({lines[0][:160]})" if lines else ""
        raise ConfigError(
            f"input-size {input_size}: model '{model.info.name}' cannot take it{problem}; "
            f"its default is {model.info.input_size}"
        ) from None
    finally:
        model.train(training)
