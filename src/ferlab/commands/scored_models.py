"""Model references for ``evaluate`` and ``compare``: ``.onnx`` exports open on onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ferlab.errors import ModelError

if TYPE_CHECKING:
    from ferlab.inference.onnx_runner import OnnxModel


def scored_model(ref: str) -> str | OnnxModel:
    """``ref`` as is ("default", a run folder, a model file), or its ONNX export opened."""
    if not ref.lower().endswith(".onnx"):
        return ref
    if not Path(ref).is_file():
        raise ModelError(f"{ref}: no such file")
    from ferlab.inference.onnx_runner import OnnxModel

    return OnnxModel(ref)
