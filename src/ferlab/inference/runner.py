"""The runner type: a loaded model on one runtime, with the contract that says how to feed it.

:class:`TorchModel` runs a model file on PyTorch; :class:`ferlab.inference.onnx_runner.OnnxModel`
an ONNX export on onnxruntime. :func:`ferlab.inference.runtime.load_model` opens either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferlab.errors import ModelError
from ferlab.models.artifact import ModelBundle
from ferlab.models.spec import ModelSpec, SpecView


class ModelRunner(SpecView):
    """A loaded model on one runtime: ``outputs`` of normalised input, ``spec`` to feed it.

    ``path``: the file that runs; ``source``: the file the reference resolved to (a run's
    ``model.pt``, or the export itself); ``bundle``: the PyTorch model, where this runner has one.
    """

    runtime: str  # "torch" or "onnxruntime"
    spec: ModelSpec
    path: Path
    source: Path
    bundle: ModelBundle | None = None
    int8: bool = False

    @property
    def default_tta(self) -> str:
        return self.spec.tta

    @property
    def label(self) -> str:
        """What runs the model, as reports name it: "torch", "onnxruntime" or "onnxruntime int8"."""
        return f"{self.runtime} int8" if self.int8 else self.runtime

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and, for a ``va`` model, valence and arousal (N, 2), else None."""
        raise NotImplementedError

    def checked_batch(self, batch: object) -> np.ndarray:
        """``batch`` as contiguous float32 (N, C, S, S) for this model, or a ModelError that says
        what the model takes and what came."""
        size, channels = self.prep.input_size, self.prep.in_channels
        if isinstance(batch, np.ndarray) and np.issubdtype(batch.dtype, np.floating):
            if batch.ndim == 4 and batch.shape[1:] == (channels, size, size):
                return np.ascontiguousarray(batch, np.float32)
            got = f"a {batch.dtype} array of shape {batch.shape}"
        elif isinstance(batch, np.ndarray):
            got = f"a {batch.dtype} array"
        else:
            got = type(batch).__name__
        raise ModelError(
            f"{self.source}: input: expected a normalised float32 numpy array of shape "
            f"(N, {channels}, {size}, {size}) (see spec.model_input), got {got}"
        )

    def explainable(self) -> ModelBundle:
        """The PyTorch model for Grad-CAM, or a ModelError that says what can explain."""
        if self.bundle is None:
            raise ModelError(
                f"{self.source}: Grad-CAM needs PyTorch weights and this model runs on "
                f"{self.label}; use its .pt model file (on PyTorch)"
            )
        return self.bundle


class TorchModel(ModelRunner):
    """A loaded model file run by PyTorch in inference mode; ``path``: the file it was read from
    (the model's name for one built in memory)."""

    runtime = "torch"

    def __init__(self, bundle: ModelBundle, path: Path | None = None) -> None:
        self.bundle = bundle
        self.spec = bundle.spec
        self.path = self.source = path if path is not None else Path(bundle.name)
        self.model = bundle.model.eval()

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        tensor = torch.from_numpy(self.checked_batch(batch))
        with torch.inference_mode():
            output = self.model.outputs(tensor)
            logits, va = self.model.split(output.float())
            return torch.softmax(logits, dim=1).numpy(), None if va is None else va.numpy()
