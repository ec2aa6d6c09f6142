"""Model references → classifiers: normalised float32 (N, C, S, S) in, probabilities (N, K) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ferlab.errors import ConfigError, ModelError
from ferlab.inference.preprocess import decode_settings
from ferlab.models.artifact import ModelBundle, load_model_file, resolve_model_file, shipped_name
from ferlab.preprocessing import Preprocessing
from ferlab.tta_modes import tta_mode

BACKENDS = ("auto", "torch", "onnx")


class Classifier(Protocol):
    """What the recognizer needs of a model, whichever runtime runs it."""

    name: str
    classes: list[str]
    prep: Preprocessing
    image_size: int  # side crops are decoded at before the model's own resize
    color: str  # "gray" or "rgb"
    runtime: str  # what runs it: "torch" or "onnxruntime"
    default_tta: str  # the test-time augmentation the model is meant to run with (data.tta)
    va: bool  # whether the model also predicts valence and arousal
    meta: dict[str, Any]  # "class_prior" and "prior_tau" where the model records them

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and, for a ``va`` model, valence and arousal (N, 2), else None."""
        ...


class TorchClassifier:
    """A loaded model file run by PyTorch in inference mode."""

    runtime = "torch"

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle  # for heatmaps on the same weights (the web service)
        self.model = bundle.model.eval()
        self.name = bundle.name
        self.classes = bundle.classes
        self.prep = bundle.prep
        self.image_size, self.color = decode_settings(bundle.meta, bundle.prep)
        self.default_tta = tta_mode(bundle.meta.get("tta"))
        self.va = bundle.va
        self.meta = bundle.meta

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            output = self.model.outputs(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
            logits, va = self.model.split(output.float())
            return torch.softmax(logits, dim=1).numpy(), None if va is None else va.numpy()


def open_classifier(ref: str | Path, backend: str = "auto") -> Classifier:
    """``"default"``, a run folder, a model file or an ``.onnx`` export, on ``backend``.

    ``auto`` runs the shipped models and ``.onnx`` files on onnxruntime (the shipped model has its
    ONNX export beside it) and other model files on PyTorch; ``onnx`` with a model file exports it
    once to the ferlab cache folder and runs that.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown '{backend}'; available: {', '.join(BACKENDS)}")
    file = resolve_model_file(ref)
    shipped_onnx = file.with_suffix(".onnx")
    if shipped_name(ref) is not None and backend != "torch" and shipped_onnx.is_file():
        from ferlab.inference.onnx_runner import OnnxModel

        return OnnxModel(shipped_onnx)
    if file.suffix.lower() == ".onnx":
        if backend == "torch":
            raise ModelError(f"{file}: an ONNX export runs on the onnx backend, not torch")
        from ferlab.inference.onnx_runner import OnnxModel

        return OnnxModel(file)
    if backend == "onnx":
        from ferlab.inference.onnx_export import cached_onnx
        from ferlab.inference.onnx_runner import OnnxModel

        return OnnxModel(cached_onnx(file))
    return TorchClassifier(load_model_file(file))
