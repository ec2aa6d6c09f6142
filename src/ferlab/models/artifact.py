"""The self-contained model file: weights and their contract (``ModelSpec``), read weights-only."""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ferlab.errors import FerlabError, ModelError, os_error_line
from ferlab.models import bounds
from ferlab.models.ensemble import build_ensemble
from ferlab.models.registry import FaceClassifier, create_model
from ferlab.models.spec import ENSEMBLE_NAME, ModelSpec, SpecView, legacy_spec
from ferlab.outputs import write_atomic
from ferlab.preprocessing import Preprocessing
from ferlab.run_folder import RunFolder
from ferlab.suggest import did_you_mean

MODEL_FORMAT = "ferlab-model"
MODEL_FORMAT_VERSION = 2  # 2: the contract in payload["spec"]; 1: options spread over meta


@dataclass
class ModelBundle(SpecView):
    """A ready-to-run model and its contract; ``meta``: provenance (data, strategy, the training
    config), recorded and never read back."""

    model: FaceClassifier
    spec: ModelSpec
    meta: dict[str, Any] = field(default_factory=dict)


def save_model_file(path: Path, bundle: ModelBundle) -> None:
    """Write ``bundle`` atomically; the file loads with ``torch.load(weights_only=True)``."""
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "spec": bundle.spec.to_dict(),
        "meta": bundle.meta,
        "state_dict": {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def load_model_file(path: str | Path) -> ModelBundle:
    """Load a model file with weights-only unpickling; every value is checked before use and
    anything else is refused with a one-line ModelError naming the file."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"{file}: model file not found")
    payload = _read_payload(file)
    if payload.get("format") != MODEL_FORMAT:
        raise ModelError(f"{file}: not a ferlab model file (train one with 'ferlab train')")
    version = bounds.checked_int(file, "version", payload.get("version", 0), 0, 2**31)
    if version > MODEL_FORMAT_VERSION:
        raise ModelError(f"{file}: written by a newer ferlab (format {version})")
    layout = {"spec"} if version >= 2 else {"model", "classes", "preprocessing"}
    missing = sorted((layout | {"state_dict"}) - set(payload))
    if missing:
        raise ModelError(f"{file}: incomplete model file (no {', '.join(missing)})")
    meta = dict(bounds.checked_mapping(file, "meta", payload.get("meta", {})))
    spec = ModelSpec.from_dict(file, payload["spec"]) if version >= 2 else _format1(file, payload)
    model = _build_model(file, spec)
    _load_weights(file, model, spec.name, payload["state_dict"])
    spec.check_prior(file)
    if spec.va != model.va:
        raise ModelError(
            f"{file}: the file says valence/arousal outputs {spec.va}, but head '{spec.head}' "
            f"has {model.va}"
        )
    if spec.prep.in_channels != model.info.in_channels:
        raise ModelError(
            f"{file}: preprocessing.in_channels: {spec.prep.in_channels}, but model "
            f"'{spec.name}' takes {model.info.in_channels}"
        )
    model.eval()
    if spec.prep.input_size != model.info.input_size:
        _check_input_size(file, model, spec.prep)
    return ModelBundle(model=model, spec=spec, meta=meta)


def _build_model(file: Path, spec: ModelSpec) -> FaceClassifier:
    """The untrained model ``spec`` describes: one architecture, or an ensemble of them."""
    if (spec.name == ENSEMBLE_NAME) != bool(spec.members):
        raise ModelError(f"{file}: spec: an ensemble lists its members, and only an ensemble")
    if spec.members:
        return build_ensemble(file, spec)
    try:
        return create_model(spec.name, len(spec.classes), pretrained=False, head=spec.head)
    except FerlabError as exc:
        raise ModelError(f"{file}: {exc}") from None


def _format1(file: Path, payload: dict[str, Any]) -> ModelSpec:
    """The contract of a format-1 file, read from its top-level keys and ``meta``."""
    return legacy_spec(
        file,
        name=payload["model"],
        classes=payload["classes"],
        preprocessing=payload["preprocessing"],
        head=payload.get("head", "linear"),
        va=payload.get("va", False),
        meta=bounds.checked_mapping(file, "meta", payload.get("meta", {})),
    )


def load_weights_only(path: Path, kind: str) -> Any:
    """``torch.load`` of ``path`` with weights-only unpickling; a file that is not a torch zip
    archive, one that holds Python objects beyond weights, or a damaged one is a ModelError in
    one line naming the file as a ``kind`` ("model file", "checkpoint")."""
    if path.is_file() and not _is_zip(path):
        raise ModelError(f"{path}: not a readable {kind} (not a torch zip archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path}: refused: the file holds Python objects beyond weights (weights-only load)"
        ) from None
    except Exception as exc:  # torch raises many types for a damaged archive; all mean the same
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: not a readable {kind} ({first})") from None


def _is_zip(path: Path) -> bool:
    """Whether ``path`` is a zip archive; a file that cannot be opened is a ModelError saying
    why (``model.pt: permission denied``)."""
    try:
        with path.open("rb") as handle:
            return zipfile.is_zipfile(handle)
    except OSError as exc:
        raise ModelError(os_error_line(exc, path)) from None


def _read_payload(file: Path) -> dict[str, Any]:
    payload = load_weights_only(file, "model file")
    if not isinstance(payload, dict):
        raise ModelError(f"{file}: not a ferlab model file (train one with 'ferlab train')")
    return payload


def _load_weights(file: Path, model: FaceClassifier, name: str, state: Any) -> None:
    """Load ``state`` into ``model``: tensors only, every key and shape fitting, all finite."""
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{file}: state_dict: expected a mapping of names to tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:160]
        raise ModelError(f"{file}: weights do not fit model '{name}' ({detail})") from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise ModelError(f"{file}: state_dict: weights hold NaN or infinite values")


def _check_input_size(file: Path, model: FaceClassifier, prep: Preprocessing) -> None:
    """One forward pass at a size the model was not registered with: too small fails here."""
    probe = torch.zeros(1, prep.in_channels, prep.input_size, prep.input_size)
    try:
        with torch.inference_mode():
            model.outputs(probe)
    except RuntimeError:
        raise ModelError(
            f"{file}: preprocessing.input_size: {prep.input_size} px is too small for "
            f"model '{model.info.name}'"
        ) from None


SHIPPED_MODELS = {
    "fer2013": "MobileNetV2, 7 classes, trained on FER2013's original labels",
    "ferplus": "MobileNetV2, 8 classes (contempt too), trained on the FER+ crowd votes and "
    "distilled from an ensemble",
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
        candidate = RunFolder(path).model_file
        if not candidate.is_file():
            raise ModelError(
                f"{path}: run folder has no {candidate.name} (did its training finish?)"
            )
        return candidate
    if not path.exists():
        names = ["default", *SHIPPED_MODELS]
        hint = did_you_mean(str(ref).lower(), names) if len(path.parts) == 1 else ""
        hint = hint or f"; shipped models: {', '.join(names)}"
        raise ModelError(f"{path}: no such run folder or model file{hint}")
    return path
