"""The models evaluation scores: PyTorch model files, or exports that another runtime runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np

from ferlab.models.artifact import ModelBundle
from ferlab.preprocessing import Preprocessing


class ExportedModel(Protocol):
    """A model run by another runtime (an ONNX export on onnxruntime), as ``evaluate`` and
    ``compare_models`` take it: normalised float32 (N, C, S, S) in, probabilities out."""

    path: Path
    name: str
    classes: list[str]
    prep: Preprocessing
    meta: dict[str, Any]  # "config": training options (class mapping, split); "tta"; "int8"
    va: bool
    runtime: str

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and, for a ``va`` model, valence and arousal (N, 2), else None."""
        ...


ScoredModel: TypeAlias = ModelBundle | ExportedModel


def runtime_label(model: ScoredModel) -> str:
    """What runs ``model``: "torch", or the export's runtime and, for int8 ones, "int8"."""
    if isinstance(model, ModelBundle):
        return "torch"
    return f"{model.runtime} int8" if "int8" in model.meta else model.runtime


def parameter_count(model: ScoredModel) -> int | None:
    """Trainable and frozen parameters of a PyTorch model; None for an export."""
    if isinstance(model, ModelBundle):
        return sum(p.numel() for p in model.model.parameters())
    return None
