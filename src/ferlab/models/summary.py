"""A table of the registry: parameter counts and default input sizes."""

from __future__ import annotations

import torch

from ferlab.models.registry import create_model, list_models, model_info


def parameter_count(name: str, num_classes: int = 7) -> int:
    """Parameters of ``name`` with a linear head, counted on the meta device (no memory, fast)."""
    with torch.device("meta"):
        model = create_model(name, num_classes, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def registry_table(num_classes: int = 7) -> list[str]:
    """Lines of a fixed-width table over all registered models."""
    lines = [
        f"{'model':<20} {'params (7 cl.)':>14} {'input':>6} {'ch':>3}  pretrained  description"
    ]
    for name in list_models():
        info = model_info(name)
        params = parameter_count(name, num_classes)
        weights = "ImageNet" if info.pretrained_weights else "-"
        lines.append(
            f"{name:<20} {params / 1e6:>13.2f}M {info.input_size:>6} {info.in_channels:>3}  "
            f"{weights:<10}  {info.description}"
        )
    return lines
