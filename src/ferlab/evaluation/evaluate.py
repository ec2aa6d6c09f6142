"""``ferlab.evaluate``: score a trained model on a split of a data set and write metrics.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferlab.data.classes import ClassMapping, parse_class_options
from ferlab.data.datamodule import load_labelled_split
from ferlab.data.sources import load_dataset
from ferlab.data.transforms import eval_transform
from ferlab.errors import DataError
from ferlab.evaluation.metrics import classification_metrics
from ferlab.models.artifact import ModelBundle, load_model_file, resolve_model_file


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    out_dir: Path
    probs: np.ndarray
    labels: np.ndarray


def predict_probs(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for uint8 images (N, C, H, W), in batches, on the CPU."""
    transform = eval_transform(bundle.prep)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = transform(images[start : start + batch_size])
            outputs.append(torch.softmax(bundle.model(batch).float(), dim=1))
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(bundle.classes)))


def _mapping_for(
    bundle: ModelBundle,
    data_classes: list[str],
    keep: str | None,
    rename: str | None,
    merge: str | None,
) -> ClassMapping:
    """Map the data's class names onto the model's, by default with its training options."""
    trained = bundle.meta.get("config", {})
    if keep is None and rename is None and merge is None:
        keep, rename, merge = trained.get("keep"), trained.get("rename"), trained.get("merge")
    keep_list, rename_map, merge_map = parse_class_options(keep, rename, merge)
    mapping = ClassMapping.build(data_classes, keep=keep_list, rename=rename_map, merge=merge_map)
    unknown = [name for name in mapping.names if name not in bundle.classes]
    if unknown:
        raise DataError(
            f"the data has classes the model does not know ({', '.join(unknown)}); model classes: "
            f"{', '.join(bundle.classes)}; map them with --rename/--merge or drop them with --keep"
        )
    return mapping


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    keep: str | None = None,
    rename: str | None = None,
    merge: str | None = None,
    batch_size: int = 256,
    on_bad_file: str = "skip",
) -> EvaluationResult:
    """Evaluate a run folder or model file on ``split`` of ``data``; writes ``metrics.json``."""
    model_file = resolve_model_file(model)
    bundle = load_model_file(model_file)
    trained = bundle.meta.get("config", {})
    source = load_dataset(
        data,
        val_fraction=float(trained.get("val_fraction", 0.1)),
        test_fraction=float(trained.get("test_fraction", 0.1)),
        seed=int(trained.get("seed", 0)),
        on_bad_file=on_bad_file,
    )
    mapping = _mapping_for(bundle, source.classes, keep, rename, merge)
    split_data = load_labelled_split(
        source,
        split,
        mapping,
        image_size=int(trained.get("image_size", bundle.prep.input_size)),
        color=str(trained.get("color", "gray")),
        on_bad_file=on_bad_file,
        cache_dir=Path(trained["cache_dir"]) if trained.get("cache_dir") else None,
    )
    to_model = torch.tensor([bundle.classes.index(name) for name in mapping.names])
    labels = to_model[split_data.labels].numpy()
    probs = predict_probs(bundle, split_data.images, batch_size)
    metrics = classification_metrics(labels, probs, bundle.classes)
    metrics.update({"model": str(model_file), "data": str(data), "split": split})
    out_dir = Path(out) if out is not None else model_file.parent / f"eval-{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ".metrics.json.tmp"
    partial.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(partial, out_dir / "metrics.json")
    return EvaluationResult(metrics, out_dir, probs, labels)
