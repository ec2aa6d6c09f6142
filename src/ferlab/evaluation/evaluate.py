"""``ferlab.evaluate``: score a trained model on a split of a data set; write metrics and a report.

The output folder gets ``metrics.json``, ``predictions.csv`` (one row per image), ``report.md``
(figures in ``plots/``) and a self-contained ``report.html``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferlab.config import load_config
from ferlab.data.classes import CLASS_SPELLINGS, ClassMapping, parse_class_options
from ferlab.data.datamodule import LabelledImages, load_labelled_split
from ferlab.data.soft_labels import attach_votes, read_vote_table
from ferlab.data.sources import EVERY_SPLIT, DatasetSource, load_dataset
from ferlab.data.tta import tta_views
from ferlab.errors import ConfigError, DataError
from ferlab.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    probs_to_logits,
)
from ferlab.evaluation.crowd import answer_shares, crowd_metrics
from ferlab.evaluation.metrics import ECE_BINS, classification_metrics
from ferlab.evaluation.plots import Plot, report_plots
from ferlab.evaluation.predictions import image_ids, write_predictions
from ferlab.evaluation.report import write_report
from ferlab.evaluation.va_metrics import va_metrics
from ferlab.evaluation.va_plots import va_plots
from ferlab.inference.runner import ModelRunner
from ferlab.inference.runtime import load_model
from ferlab.models.artifact import ModelBundle
from ferlab.models.prior import check_prior_tau, prior_adjusted
from ferlab.models.spec import ModelSpec
from ferlab.outputs import (
    check_new,
    check_outside_data,
    check_writable,
    numbered,
    staged_folder,
    write_atomic,
)
from ferlab.progress import bar
from ferlab.run_folder import RunFolder
from ferlab.tta_modes import tta_mode

REPORT_FILES = ("metrics.json", "report.md", "report.html")
"""What an evaluation writes besides its figures; one of them in ``out`` means an earlier report."""


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    out_dir: Path
    probs: np.ndarray
    labels: np.ndarray
    report: Path


def predict_probs(
    runner: ModelRunner | ModelBundle,
    images: torch.Tensor,
    batch_size: int = 256,
    *,
    tta: str | bool = "none",
) -> np.ndarray:
    """Class probabilities for uint8 images (N, C, H, W), in batches, on the CPU; ``tta``: the
    mean over each image's views (``ferlab.data.tta``: none, flip, shift; True is flip)."""
    return predict_outputs(runner, images, batch_size, tta=tta)[0]


def predict_outputs(
    model: ModelRunner | ModelBundle,
    images: torch.Tensor,
    batch_size: int = 256,
    *,
    tta: str | bool = "none",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities, and for a valence/arousal model its (N, 2) predictions (else None),
    as :func:`predict_probs` computes them."""
    runner = load_model(model)
    transform = runner.spec.eval_transform()
    mode = tta_mode(tta)

    def run(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        probs, va_out = runner.outputs(batch.numpy())
        return torch.from_numpy(probs), None if va_out is None else torch.from_numpy(va_out)

    probs, va = [], []
    with torch.inference_mode(), bar("score", len(images), unit="images") as line:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            outputs = [run(transform(view)) for view in tta_views(batch, mode)]
            probs.append(torch.stack([p for p, _ in outputs]).mean(0))
            view_va = [v for _, v in outputs if v is not None]
            if view_va:
                va.append(torch.stack(view_va).mean(0))
            line.advance(len(batch))
    if not probs:
        return np.zeros((0, len(runner.classes))), np.zeros((0, 2)) if runner.va else None
    return torch.cat(probs).numpy(), torch.cat(va).numpy() if va else None


def _spelling(name: str) -> str:
    """The FER2013 spelling of a class name (case and the aliases of ``CLASS_SPELLINGS``)."""
    lowered = name.strip().lower()
    return CLASS_SPELLINGS.get(lowered, lowered)


def _spelling_renames(
    spec: ModelSpec, data_classes: list[str], rename: dict[str, str], merge: dict[str, list[str]]
) -> dict[str, str]:
    """Data class -> model class for the data's names the model and the class options do not
    know that are unambiguously another spelling of one they do (``Happy``, ``anger``)."""
    known = {*spec.classes, *rename, *(m for members in merge.values() for m in members)}
    by_spelling: dict[str, set[str]] = {}
    for name in known:
        by_spelling.setdefault(_spelling(name), set()).add(rename.get(name, name))
    taken = {rename.get(name, name) for name in data_classes if name in known}
    claimed: dict[str, list[str]] = {}
    for name in data_classes:
        if name not in known:
            claimed.setdefault(_spelling(name), []).append(name)
    renames = {}
    for spelling, names in claimed.items():
        targets = by_spelling.get(spelling, set())
        if len(names) == 1 and len(targets) == 1 and not targets & taken:
            renames[names[0]] = targets.pop()
    return renames


def _targets(
    data_classes: list[str],
    keep: list[str] | None,
    rename: dict[str, str],
    merge: dict[str, list[str]] | None,
) -> list[str]:
    """The classes ``ClassMapping.build`` would map the data's classes to, A-Z."""
    group_of = {member: group for group, members in (merge or {}).items() for member in members}
    renamed = (rename.get(name, name) for name in data_classes)
    targets = {group_of.get(name, name) for name in renamed}
    return sorted(name for name in targets if keep is None or name in keep)


def _over_model_classes(
    spec: ModelSpec,
    data_classes: list[str],
    keep: list[str] | None,
    rename: dict[str, str],
    merge: dict[str, list[str]] | None,
) -> ClassMapping:
    """The data's classes mapped as ``ClassMapping.build`` maps them, with the model's classes
    the data lacks as further targets (the build that scores a one-class data set)."""
    renamed = {rename.get(name, name) for name in data_classes}
    extra = [name for name in spec.classes if name not in renamed and name not in data_classes]
    if keep is not None:
        targets = ClassMapping.build([*data_classes, *extra], rename=rename, merge=merge).names
        keep = [*keep, *(name for name in spec.classes if name not in keep and name in targets)]
    full = ClassMapping.build([*data_classes, *extra], keep=keep, rename=rename, merge=merge)
    lookup = {name: i for name, i in full.lookup.items() if name in data_classes}
    return ClassMapping(source=list(data_classes), names=full.names, lookup=lookup)


def map_classes_to_model(
    spec: ModelSpec,
    data_classes: list[str],
    keep: str | None,
    rename: str | None,
    merge: str | None,
    where: str | Path = "the data",
) -> ClassMapping:
    """Map the data's class names onto the model's, by default with its training options.

    Other spellings of the model's class names (case, ``CLASS_SPELLINGS``) are mapped onto them
    with a warning that says so. Data of one class (a subset of the model's classes, as
    evaluation allows) is scored over all the model's classes. ``where``: the data, named in
    errors.
    """
    if keep is None and rename is None and merge is None:
        keep, rename, merge = spec.class_options()
    keep_list, rename_map, merge_map = parse_class_options(keep, rename, merge)
    renames = _spelling_renames(spec, data_classes, rename_map or {}, merge_map or {})
    if renames:
        shown = ", ".join(f"{old} -> {new}" for old, new in renames.items())
        warnings.warn(f"{where}: class names read as the model's: {shown}", stacklevel=2)
    rename_map = {**(rename_map or {}), **renames}
    scored = _targets(data_classes, keep_list, rename_map, merge_map)
    unknown = [name for name in scored if name not in spec.classes]
    if unknown:
        raise DataError(
            f"the data has classes the model does not know ({', '.join(unknown)}) in {where}; "
            f"model classes: {', '.join(spec.classes)}; map them with --rename/--merge or drop "
            "them with --keep"
        )
    if len(scored) == 1:
        return _over_model_classes(spec, data_classes, keep_list, rename_map, merge_map)
    return ClassMapping.build(data_classes, keep=keep_list, rename=rename_map, merge=merge_map)


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
    if len(np.unique(val[1])) < 2:
        metrics["calibration_note"] = "no temperature fitted: the val split holds one class"
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
    run = RunFolder.of_model(model_file)
    if run is None:
        return [], "training curves: the model is not in a run folder"
    if not run.metrics.is_file():
        return [], f"training curves: no {run.metrics.name} in the run"
    rows = run.metrics_rows()
    return rows, None if rows else f"training curves: {run.metrics.name} has no epochs"


def training_data(model_file: Path) -> tuple[str, str | None]:
    """The data set and crowd-labels file (or None) that the run holding ``model_file`` trained
    on, as its config records them."""
    run = RunFolder.of_model(model_file)
    if run is None:
        raise ConfigError(
            f"{model_file}: not in a run folder, so no training data comes with it; "
            "give the data to score it on (--data PATH)"
        )
    config = load_config(run.config)
    return config.data, config.labels


def labelled_source(
    spec: ModelSpec,
    data: str | Path,
    on_bad_file: str,
    labels: str | Path | None = None,
    *,
    whole: bool = False,
) -> DatasetSource:
    """``data`` split as the model's training split it (for data without fixed splits; with
    ``whole``, as one split of every image), with the crowd votes of ``labels`` laid over it
    when given."""
    source = load_dataset(data, **spec.split_options(), on_bad_file=on_bad_file, whole=whole)
    if labels is not None:
        source, _ = attach_votes(source, read_vote_table(labels))
    return source


def crowd_mapping(
    spec: ModelSpec,
    source: DatasetSource,
    keep: str | None,
    rename: str | None,
    merge: str | None,
    voted: bool,
) -> tuple[ClassMapping, list[str]]:
    """The class mapping onto the model, and the classes the votes name that the model lacks:
    with ``voted`` data and no class options, those are dropped rather than refused."""
    unanswerable: list[str] = []
    if voted:
        unanswerable = [name for name in source.classes if name not in spec.classes]
        if unanswerable and keep is None and rename is None and merge is None:
            keep = ",".join(name for name in source.classes if name in spec.classes)
    mapping = map_classes_to_model(spec, source.classes, keep, rename, merge, source.root)
    return mapping, unanswerable


def trained_split(
    spec: ModelSpec,
    source: DatasetSource,
    split: str,
    mapping: ClassMapping,
    on_bad_file: str,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> LabelledImages:
    """``split`` of ``source`` as the model's training split and decoded it (see
    :func:`labelled_source` for the source), ``limit``: a stratified sample of that many drawn
    with ``seed``; the one place evaluate, compare and the scripts load a model's labelled
    split."""
    return load_labelled_split(
        source,
        split,
        mapping,
        image_size=spec.decode_size,
        color=spec.color,
        on_bad_file=on_bad_file,
        cache_dir=Path(spec.cache_dir) if spec.cache_dir else None,
        limit=limit,
        seed=seed,
    )


def _prior_tau(runner: ModelRunner, prior_tau: float | None) -> float:
    """The τ to run with (the model file's unless given), checked against its recorded prior."""
    tau = runner.spec.prior_tau if prior_tau is None else check_prior_tau(prior_tau)
    if tau > 0:
        runner.spec.prior(str(runner.source))
    return tau


class SplitScorer:
    """Predicts a split and puts labels and probabilities in the scored classes: the model's
    classes that the data can label, in the model's order (probabilities renormalised over them),
    after the prior adjustment."""

    def __init__(self, runner: ModelRunner, mapping: ClassMapping, tau: float) -> None:
        self.runner = runner
        self.mapping = mapping
        self.tau = tau
        self.prior = runner.spec.prior(str(runner.source)) if tau else None
        self.columns = [k for k, name in enumerate(runner.classes) if name in mapping.names]
        self.classes = [runner.classes[k] for k in self.columns]

    def predict(
        self, source: DatasetSource, split: str, on_bad_file: str, batch_size: int, tta: str
    ) -> tuple[LabelledImages, np.ndarray, np.ndarray, np.ndarray | None]:
        """The split's images, its labels as scored class ids, the probabilities over the scored
        classes and the valence/arousal predictions (None for a classification-only model)."""
        data = trained_split(self.runner.spec, source, split, self.mapping, on_bad_file)
        return (data, *self.score(data, batch_size, tta))

    def score(
        self, data: LabelledImages, batch_size: int, tta: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels as scored class ids, probabilities over the scored classes and valence/arousal
        predictions of loaded ``data``."""
        probs, va = predict_outputs(self.runner, data.images, batch_size, tta=tta)
        if self.prior is not None:
            probs = prior_adjusted(probs, self.prior, self.tau)
        if len(self.columns) < len(self.runner.classes):
            probs = probs[:, self.columns]
            probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
        to_scored = torch.tensor([self.classes.index(name) for name in self.mapping.names])
        return to_scored[data.labels].numpy(), probs, va

    def votes(self, data: LabelledImages) -> np.ndarray | None:
        """The split's crowd votes over the scored classes (None without votes)."""
        if data.votes is None:
            return None
        order = [self.mapping.names.index(name) for name in self.classes]
        return data.votes.numpy()[:, order].astype(np.float64)


def _valence_arousal(
    metrics: dict[str, Any],
    data: LabelledImages,
    va_pred: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
) -> list[Plot]:
    """Add the valence/arousal metrics to ``metrics`` (or a note why there are none); their
    plots."""
    if data.va is None or bool(torch.isnan(data.va).all()):
        metrics["va_note"] = "valence/arousal: the data has no values in this split"
        return []
    va_true = data.va.numpy()
    metrics["valence_arousal"] = va_metrics(va_true, va_pred)
    return va_plots(va_true, va_pred, labels, probs.argmax(axis=1), classes)


def check_split(source: DatasetSource, split: str) -> None:
    """Raise DataError, suggesting a split the data has, when it lacks ``split``."""
    if split not in source.splits:
        have = list(source.splits)
        other = "val" if "val" in have else have[0]
        raise DataError(
            f"{source.root}: no '{split}' split (have {', '.join(have)}); score another with "
            f"--split {other}"
        )


def _default_out(model_file: Path, split: str) -> Path:
    """The run's evaluation folder for ``split`` when the model is in a run folder; for a file
    outside a run (the shipped model in the installed package, a downloaded file),
    ``evaluations/<stem>-<split>`` here."""
    run = RunFolder.of_model(model_file)
    if run is not None:
        return run.eval_dir(split)
    return Path("evaluations") / f"{model_file.stem}-{split}"


def evaluate(
    model: str | Path | ModelRunner,
    data: str | Path | None = None,
    *,
    split: str = "test",
    out: str | Path | None = None,
    keep: str | None = None,
    rename: str | None = None,
    merge: str | None = None,
    batch_size: int = 256,
    on_bad_file: str = "skip",
    tta: str | bool | None = None,
    labels: str | Path | None = None,
    prior_tau: float | None = None,
    backend: str = "auto",
    exist_ok: bool = False,
) -> EvaluationResult:
    """Evaluate a model reference (``"default"``, a shipped model's name, a run folder, a model
    file, an ``.onnx`` export) opened on ``backend`` by :func:`ferlab.load_model`, or a runner,
    on ``split`` of ``data`` (default, for a model in a run folder: the data and crowd labels the
    run trained on; ``"all"``: every image of every split); the metrics name the runtime
    (``runtime``).

    Writes ``metrics.json``, ``predictions.csv``, ``report.md`` and ``report.html`` to ``out``
    (default: the ``eval-<split>`` folder beside the model in a run folder, else
    ``evaluations/<model>-<split>`` in the working folder, numbered ``-2``, ``-3``, ... when
    taken; an ``out`` that holds an earlier report needs ``exist_ok``). A temperature for
    calibration is fitted on the data's val split, never on the split that is scored. ``tta``:
    average over each image's views: "none", "flip" (True), "shift" (see ``ferlab.data.tta``;
    None: as the model file says).

    ``labels``: a crowd-votes CSV laid over the data (``ferlab.data.soft_labels``): each image is
    scored against its majority (images whose majority names no class are left out) and the
    metrics gain the crowd agreement (``crowd``). Classes the votes name but the model lacks are
    left out with the images whose majority they are (``unanswerable_classes``); classes the model
    has but the data cannot label are left out of the scoring: their probability is dropped and
    the rest renormalised (``unscored_model_classes``). ``prior_tau``: divide the probabilities by
    the model's training class prior to this power (``ferlab.models.prior``; None: as the model
    file says, else 0).
    """
    runner = load_model(model, backend)
    spec, model_file = runner.spec, runner.source
    if data is None:
        data, trained_labels = training_data(model_file)
        labels = trained_labels if labels is None else labels
    out_dir = Path(out) if out is not None else numbered(_default_out(model_file, split))
    check_outside_data(out_dir, data)
    check_new([out_dir / name for name in REPORT_FILES], exist_ok)
    check_writable(out_dir)
    tta = tta_mode(spec.tta if tta is None else tta)
    source = labelled_source(spec, data, on_bad_file, labels, whole=split == EVERY_SPLIT)
    check_split(source, split)
    mapping, unanswerable = crowd_mapping(spec, source, keep, rename, merge, labels is not None)
    tau = _prior_tau(runner, prior_tau)
    scoring = SplitScorer(runner, mapping, tau)
    split_data, true, probs, va_pred = scoring.predict(source, split, on_bad_file, batch_size, tta)
    classes = scoring.classes
    metrics = classification_metrics(true, probs, classes)
    metrics.update(
        {
            "model": str(model_file),
            "runtime": runner.label,
            "data": str(data),
            "split": split,
            "tta": tta,
            "prior_tau": tau,
            "answers": answer_shares(true, probs, classes),
        }
    )
    if labels is not None:
        metrics["labels"] = str(labels)
        votes = scoring.votes(split_data)
        if votes is not None:
            metrics["crowd"] = crowd_metrics(probs, votes)
    if unanswerable:
        metrics["unanswerable_classes"] = unanswerable
    if len(classes) < len(runner.classes):
        metrics["unscored_model_classes"] = [c for c in runner.classes if c not in classes]
    if source.loading_note():
        metrics["data_note"] = source.loading_note()
    if split == EVERY_SPLIT:
        metrics["split_note"] = (
            f"'{EVERY_SPLIT}' scores every image of {source.root}, no split drawn: meaningful "
            "for a model that did not train on this data"
        )
    elif split in source.made_splits:
        options = runner.spec.split_options()
        total = sum(len(table) for table in source.splits.values())
        metrics["split_note"] = (
            f"{source.root} has no fixed splits: '{split}' is the share drawn as the model's "
            f"training drew it (seed {options['seed']}, val {options['val_fraction']:g}, test "
            f"{options['test_fraction']:g}), {len(source.splits[split])} of its {total} images"
        )
    val: tuple[np.ndarray, np.ndarray] | str = (probs, true)
    if split == EVERY_SPLIT:
        val = "the scored images include the val split"
    elif split != "val":
        try:
            _, val_labels, val_probs, _ = scoring.predict(
                source, "val", on_bad_file, batch_size, tta
            )
            val = (val_probs, val_labels)
        except DataError as exc:
            val = str(exc)
    scaled = _calibrate(metrics, probs, true, val)
    history, history_note = _training_history(model_file)
    figures = report_plots(
        runner, metrics, split_data.images, true, probs, scaled, history, ECE_BINS, classes
    )
    if va_pred is not None:
        figures += _valence_arousal(metrics, split_data, va_pred, true, probs, classes)
    notes = [history_note] if history_note else []
    if runner.bundle is None:
        notes.append(
            f"Grad-CAM: needs a PyTorch model file; {model_file.name} runs on {runner.label} "
            "(use the .pt model file or --backend torch)"
        )
    ids = image_ids(source, split, split_data.rows.numpy())
    with staged_folder(out_dir, last=REPORT_FILES) as stage:
        write_atomic(stage / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
        write_predictions(stage / "predictions.csv", ids, true, probs, classes)
        write_report(stage, metrics, figures, notes)
    return EvaluationResult(metrics, out_dir, probs, true, out_dir / "report.html")
