"""How far an int8 export strays from its float model: top-1 agreement on face crops."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ferlab.inference.images import ImageSource
from ferlab.inference.onnx_export import calibration_batches
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.models.artifact import load_model_file


def top1_agreement(model_file: Path, export: Path, images: Sequence[ImageSource]) -> float:
    """The share of ``images``' face crops on which the ONNX ``export`` of ``model_file`` names
    the same class as the float model."""
    bundle = load_model_file(model_file)
    model = bundle.model.eval()
    exported = OnnxModel(export)
    same = total = 0
    with torch.inference_mode():
        for batch in calibration_batches(bundle, images, "compare int8"):
            logits = model.outputs(torch.from_numpy(batch))[:, : model.num_classes]
            answers = logits.argmax(dim=1).numpy()
            same += int(np.sum(exported(batch).argmax(axis=1) == answers))
            total += len(batch)
    return same / max(total, 1)
