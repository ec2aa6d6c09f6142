"""Trained models combined into one ensemble model file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from ferlab.errors import ConfigError, ModelError
from ferlab.models.artifact import ModelBundle, load_model_file, resolve_model_file
from ferlab.models.ensemble import EnsembleModel, check_distinct_files, ensemble_spec
from ferlab.models.registry import FERModel


def combine_models(
    models: Sequence[str | Path], weights: Sequence[float] | None = None
) -> ModelBundle:
    """An ensemble of ``models`` (shipped names, run folders or model files) that averages their
    probabilities with ``weights`` (default: equal); it carries the first model's preprocessing,
    test-time augmentation and label options, and the mean of the recorded class priors."""
    if isinstance(models, str | os.PathLike):
        raise ConfigError(f"combine_models takes a list of models, got {type(models).__name__}")
    sources = [str(model) for model in models]
    files = [resolve_model_file(model).resolve() for model in models]
    for source, file in zip(sources, files, strict=True):
        if file.suffix.lower() == ".onnx":
            raise ModelError(
                f"{source}: already an ONNX export; combine its .pt model file instead"
            )
    check_distinct_files(sources, files)
    bundles = [load_model_file(file) for file in files]
    shares = [1.0] * len(bundles) if weights is None else [float(w) for w in weights]
    spec = ensemble_spec([bundle.spec for bundle in bundles], shares, sources)
    members = [cast(FERModel, bundle.model) for bundle in bundles]  # ensemble_spec refused others
    model = EnsembleModel(members, spec.prep, [m.prep for m in spec.members], shares).eval()
    meta = {
        "members": [
            {"source": source, "model": bundle.spec.name, "config": bundle.meta.get("config", {})}
            for source, bundle in zip(sources, bundles, strict=True)
        ]
    }
    return ModelBundle(model=model, spec=spec, meta=meta)
