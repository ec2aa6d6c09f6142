"""``ferlab.evaluate``: score a trained model on a split of a data set; write metrics and a report.

The output folder gets ``metrics.json``, ``report.md`` (figures in ``plots/``) and a self-contained
``report.html``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferlab.data.classes import ClassMapping, parse_class_options
from ferlab.data.datamodule import LabelledImages, load_labelled_split
from ferlab.data.sources import DatasetSource, load_dataset
from ferlab.data.transforms import eval_transform
from ferlab.errors import DataError
from ferlab.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    probs_to_logits,
)
from ferlab.evaluation.metrics import ECE_BINS, classification_metrics
from ferlab.evaluation.plots import report_plots
from ferlab.evaluation.report import write_report
from ferlab.models.artifact import ModelBundle, load_model_file, resolve_model_file


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    out_dir: Path
    probs: np.ndarray
    labels: np.ndarray
    report: Path


def predict_probs(
    bundle: ModelBundle, images: torch.Tensor, batch_size: int = 256, *, tta: bool = False
) -> np.ndarray:
    """Class probabilities for uint8 images (N, C, H, W), in batches, on the CPU; ``tta``: the
    mean of each image's and its mirror image's probabilities."""
    transform = eval_transform(bundle.prep)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = transform(images[start : start + batch_size])
            probs = torch.softmax(bundle.model(batch).float(), dim=1)
            if tta:
                probs = (probs + torch.softmax(bundle.model(batch.flip(-1)).float(), dim=1)) / 2
            outputs.append(probs)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(bundle.classes)))


def map_classes_to_model(
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


def _calibrate(
    metrics: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | str,
) -> np.ndarray | None:
    """Fit a temperature on the val split's (probs, labels) and record what it does to ``probs``.

    ``val`` is the reason when there is no val split to fit on. Returns the recalibrated
    ``probs`` (None without a fit).
    """
    if isinstance(val, str):
        metrics["calibration_note"] = f"no temperature fitted: {val}"
        return None
    temperature = fit_temperature(probs_to_logits(val[0]), val[1])
    scaled = apply_temperature(probs_to_logits(probs), temperature)
    metrics["temperature"] = temperature
    metrics["ece_after_temperature"] = expected_calibration_error(scaled, labels, ECE_BINS)
    if metrics["split"] == "val":
        metrics["calibration_note"] = "temperature fitted on the evaluated split itself (val)"
    return scaled


def _training_history(model_file: Path) -> tuple[list[dict[str, str]], str | None]:
    """The rows of the run's metrics.csv, or none and the reason why."""
    run_dir = model_file.parent
    if not (run_dir / "config.yaml").is_file():
        return [], "training curves: the model is not in a run folder"
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return [], "training curves: no metrics.csv in the run"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, None if rows else "training curves: metrics.csv has no epochs"


def _predict_split(
    bundle: ModelBundle,
    source: DatasetSource,
    mapping: ClassMapping,
    split: str,
    load: dict[str, Any],
    batch_size: int,
    tta: bool,
) -> tuple[LabelledImages, np.ndarray, np.ndarray]:
    """The split's images, its labels as model class ids, and the model's probabilities."""
    data = load_labelled_split(source, split, mapping, **load)
    to_model = torch.tensor([bundle.classes.index(name) for name in mapping.names])
    probs = predict_probs(bundle, data.images, batch_size, tta=tta)
    return data, to_model[data.labels].numpy(), probs


def _default_out(model_file: Path, split: str) -> Path:
    """``eval-<split>`` in the model's run folder; for a file outside a run (the shipped model
    in the installed package, a downloaded file), ``evaluations/<stem>-<split>`` here."""
    if (model_file.parent / "config.yaml").is_file():
        return model_file.parent / f"eval-{split}"
    return Path("evaluations") / f"{model_file.stem}-{split}"


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
    tta: bool = False,
) -> EvaluationResult:
    """Evaluate a run folder, model file or ``"default"`` on ``split`` of ``data``.

    Writes ``metrics.json``, ``report.md`` and ``report.html`` to ``out`` (default: the
    ``eval-<split>`` folder beside the model in a run folder, else ``evaluations/<model>-<split>``
    in the working folder). A temperature for calibration is fitted on the data's val split,
    never on the split that is scored. ``tta``: average each image with its mirror image.
    """
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
    mapping = map_classes_to_model(bundle, source.classes, keep, rename, merge)
    load = {
        "image_size": int(trained.get("image_size", bundle.prep.input_size)),
        "color": str(trained.get("color", "gray")),
        "on_bad_file": on_bad_file,
        "cache_dir": Path(trained["cache_dir"]) if trained.get("cache_dir") else None,
    }
    split_data, labels, probs = _predict_split(
        bundle, source, mapping, split, load, batch_size, tta
    )
    metrics = classification_metrics(labels, probs, bundle.classes)
    metrics.update({"model": str(model_file), "data": str(data), "split": split, "tta": tta})
    val: tuple[np.ndarray, np.ndarray] | str = (probs, labels)
    if split != "val":
        try:
            _, val_labels, val_probs = _predict_split(
                bundle, source, mapping, "val", load, batch_size, tta
            )
            val = (val_probs, val_labels)
        except DataError as exc:
            val = str(exc)
    scaled = _calibrate(metrics, probs, labels, val)
    history, history_note = _training_history(model_file)
    figures = report_plots(
        bundle, metrics, split_data.images, labels, probs, scaled, history, bins=ECE_BINS
    )
    out_dir = Path(out) if out is not None else _default_out(model_file, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ".metrics.json.tmp"
    partial.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(partial, out_dir / "metrics.json")
    _, page = write_report(out_dir, metrics, figures, [history_note] if history_note else [])
    return EvaluationResult(metrics, out_dir, probs, labels, page)
