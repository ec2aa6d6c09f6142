"""The self-contained model file: weights, class names and preprocessing, loaded weights-only."""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ferlab.errors import ModelError
from ferlab.models.registry import FERModel, create_model
from ferlab.preprocessing import Preprocessing

MODEL_FORMAT = "ferlab-model"
MODEL_FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A ready-to-run model with what is needed to feed it and to read its output."""

    model: FERModel
    name: str
    classes: list[str]
    prep: Preprocessing
    head: str = "linear"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def va(self) -> bool:
        """Whether the model also predicts valence and arousal (see ``FERModel.outputs``)."""
        return self.model.va


def save_model_file(path: Path, bundle: ModelBundle) -> None:
    """Write ``bundle`` atomically; the file loads with ``torch.load(weights_only=True)``."""
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "model": bundle.name,
        "head": bundle.head,
        "va": bundle.va,
        "classes": list(bundle.classes),
        "preprocessing": bundle.prep.to_dict(),
        "meta": bundle.meta,
        "state_dict": {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_model_file(path: str | Path) -> ModelBundle:
    """Load a model file with weights-only unpickling; anything else is refused with ModelError."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"{file}: model file not found")
    if not zipfile.is_zipfile(file):
        raise ModelError(f"{file}: not a readable model file (not a torch file)")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{file}: refused: the file holds Python objects beyond weights (weights-only load)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{file}: not a readable model file ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelError(f"{file}: not a ferlab model file (train one with 'ferlab train')")
    if payload.get("version", 0) > MODEL_FORMAT_VERSION:
        raise ModelError(f"{file}: written by a newer ferlab (format {payload['version']})")
    classes = list(payload["classes"])
    head = payload.get("head", "linear")
    model = create_model(payload["model"], len(classes), pretrained=False, head=head)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(
            f"{file}: weights do not fit model '{payload['model']}' ({first})"
        ) from None
    if bool(payload.get("va", False)) != model.va:
        raise ModelError(
            f"{file}: the file says valence/arousal outputs {payload.get('va')}, "
            f"but head '{head}' has {model.va}"
        )
    model.eval()
    return ModelBundle(
        model=model,
        name=payload["model"],
        classes=classes,
        prep=Preprocessing.from_dict(payload["preprocessing"]),
        head=head,
        meta=dict(payload.get("meta", {})),
    )


SHIPPED_MODELS = {
    "fer2013": "MobileNetV2, 7 classes, trained on FER2013's original labels",
}
"""Models that ship inside the package (``weights/NAME.pt``, with ``NAME.onnx`` beside it)."""
DEFAULT_MODEL = "fer2013"
"""The shipped model that ``"default"`` names."""


def shipped_name(ref: str | Path) -> str | None:
    """The shipped model a reference names (``"default"`` or a name of ``SHIPPED_MODELS``), or
    None for a path."""
    name = str(ref)
    if name == "default":
        return DEFAULT_MODEL
    return name if name in SHIPPED_MODELS else None


def shipped_model_file(name: str = DEFAULT_MODEL) -> Path:
    """The file of a shipped model, or ModelError where this install lacks it."""
    if name not in SHIPPED_MODELS:
        raise ModelError(f"no shipped model '{name}'; shipped: {', '.join(SHIPPED_MODELS)}")
    shipped = resources.files("ferlab") / "weights" / f"{name}.pt"
    if not shipped.is_file():
        raise ModelError(f"model '{name}' does not ship in this install; pass a model file")
    return Path(str(shipped))


def default_model_file() -> Path:
    """The file of the model ``"default"`` names."""
    return shipped_model_file(DEFAULT_MODEL)


def resolve_model_file(ref: str | Path) -> Path:
    """A model reference → its file: ``"default"`` or a shipped model's name (see
    ``SHIPPED_MODELS``; a local folder of that name is ``./NAME``), a run folder (its
    ``model.pt``) or a model file."""
    name = shipped_name(ref)
    if name is not None:
        return shipped_model_file(name)
    path = Path(ref)
    if path.is_dir():
        candidate = path / "model.pt"
        if not candidate.is_file():
            raise ModelError(f"{path}: run folder has no model.pt (did its training finish?)")
        return candidate
    if not path.exists():
        raise ModelError(f"{path}: no such run folder or model file")
    return path
