"""A table of the registry: parameter counts, default input sizes and pretrained weights here."""

from __future__ import annotations

import torch

from ferlab.models.artifact import DEFAULT_MODEL, SHIPPED_MODELS
from ferlab.models.imagenet_files import find_imagenet_file, missing_hint
from ferlab.models.registry import create_model, list_models, model_info
from ferlab.models.weights import weights_file_problem


def parameter_count(name: str, num_classes: int = 7) -> int:
    """Parameters of ``name`` with a linear head, counted on the meta device (no memory, fast)."""
    with torch.device("meta"):
        model = create_model(name, num_classes, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def weights_status(weights_name: str) -> tuple[str, str]:
    """(``present``, the file found), (``damaged``, the file and what is wrong with it) or
    (``missing``, how to make it available offline)."""
    found = find_imagenet_file(weights_name)
    if found is None:
        return "missing", missing_hint(weights_name)
    problem = weights_file_problem(found)
    return ("damaged", f"{found}: {problem}") if problem else ("present", str(found))


def registry_table(num_classes: int = 7) -> list[str]:
    """Lines of a fixed-width table over all registered models, then where their pretrained
    weights are (or how to make them available offline)."""
    lines = [
        f"{'model':<20} {'params (7 cl.)':>14} {'input':>6} {'ch':>3}  {'weights':<8}  description"
    ]
    details = [
        "",
        "Pretrained weights (torch hub cache, ferlab's weights folder, installed packages):",
    ]
    for name in list_models():
        info = model_info(name)
        params = parameter_count(name, num_classes)
        weights = info.pretrained_weights
        status, detail = weights_status(weights) if weights is not None else ("-", "")
        lines.append(
            f"{name:<20} {params / 1e6:>13.2f}M {info.input_size:>6} {info.in_channels:>3}  "
            f"{status:<8}  {info.description}"
        )
        if weights is not None:
            details.append(f"{name:<20} {status}: {detail}")
    details.append(
        "(where there is a network, torchvision downloads its missing weights on first use)"
    )
    shipped = [
        "",
        "Trained models that ship with ferlab (ferlab predict --model NAME, "
        "Recognizer.load(NAME)):",
    ]
    for name, description in SHIPPED_MODELS.items():
        marker = "(default)" if name == DEFAULT_MODEL else ""
        shipped.append(f"{name:<20} {marker:<10} {description}")
    return lines + details + shipped
