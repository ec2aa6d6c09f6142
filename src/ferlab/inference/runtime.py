"""One runtime for every model reference: ``load_model(ref, backend)`` → a :class:`ModelRunner`.

A runner takes normalised float32 (N, C, S, S) input and gives probabilities (N, K) (and
valence/arousal for a ``va`` model); its ``spec`` (:class:`ferlab.models.spec.ModelSpec`) says how
to feed it. :class:`TorchModel` runs a model file on PyTorch, :class:`OnnxModel`
(``ferlab.inference.onnx_runner``) an ONNX export on onnxruntime. Recognizer, evaluate, compare,
explain, the web service, export and the scripts all open models here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ferlab.errors import ConfigError, ModelError
from ferlab.inference.runner import ModelRunner, TorchModel
from ferlab.models.artifact import ModelBundle, load_model_file, resolve_model_file, shipped_name

if TYPE_CHECKING:
    from ferlab.inference.onnx_runner import OnnxModel

BACKENDS = ("auto", "torch", "onnx")


def load_model(
    ref: str | Path | ModelRunner | ModelBundle = "default",
    backend: str = "auto",
    *,
    threads: int | None = None,
) -> ModelRunner:
    """``"default"``, a shipped model's name, a run folder, a model file or an ``.onnx`` export,
    on ``backend`` (a runner is returned as it is, a loaded model file runs on PyTorch).

    ``auto`` runs the shipped models and ``.onnx`` files on onnxruntime (each shipped model has
    its ONNX export beside it) and other model files on PyTorch; ``onnx`` with a model file exports
    it once to the ferlab cache folder and runs that; ``torch`` needs a model file.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown '{backend}'; available: {', '.join(BACKENDS)}")
    if isinstance(ref, ModelRunner):
        return ref
    if isinstance(ref, ModelBundle):
        return TorchModel(ref)
    if not isinstance(ref, str | os.PathLike):
        raise ConfigError(
            f"model: expected a shipped model's name, a run folder or a model file path, got "
            f"{type(ref).__name__}"
        )
    if not str(ref).strip():
        raise ConfigError(
            "model: empty name; give a shipped model's name (see 'ferlab models'), a run folder "
            "or a model file path"
        )
    file = resolve_model_file(ref)
    shipped_onnx = file.with_suffix(".onnx")
    if shipped_name(ref) is not None and backend != "torch" and shipped_onnx.is_file():
        return _onnx(shipped_onnx, shipped_onnx, threads)
    if file.suffix.lower() == ".onnx":
        if backend == "torch":
            raise ModelError(
                f"{file}: an ONNX export runs on onnxruntime; use --backend auto or onnx, or the "
                ".pt model file for torch"
            )
        return _onnx(file, file, threads)
    if backend == "onnx":
        from ferlab.inference.onnx_export import cached_onnx

        return _onnx(cached_onnx(file), file, threads)
    return TorchModel(load_model_file(file), file)


def _onnx(path: Path, source: Path, threads: int | None) -> OnnxModel:
    from ferlab.inference.onnx_runner import OnnxModel

    runner = OnnxModel(path, threads=threads)
    runner.source = source
    return runner
