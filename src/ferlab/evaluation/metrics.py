"""Classification metrics from labels, predictions and probabilities (scikit-learn underneath)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import krippendorff
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from ferlab.evaluation.calibration import expected_calibration_error
from ferlab.evaluation.va_metrics import format_va

ECE_BINS = 15
MOST_CONFUSED = 5


def _finite(value: float) -> float | None:
    """``value`` as a float, or None where it is undefined (NaN or infinite)."""
    return float(value) if math.isfinite(value) else None


def _balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the classes that occur in the true labels."""
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def _cohen_kappa(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # undefined is None here
        return _finite(cohen_kappa_score(y_true, y_pred, labels=labels))


def _krippendorff_alpha(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float | None:
    """Nominal Krippendorff's alpha with the true labels and the predictions as two coders."""
    if len(np.unique(np.concatenate([y_true, y_pred]))) < 2:
        return None  # one value in all the data: expected disagreement is zero
    alpha = krippendorff.alpha(
        reliability_data=np.stack([y_true, y_pred]).astype(float),
        value_domain=list(range(num_classes)),
        level_of_measurement="nominal",
    )
    return _finite(alpha)


def _one_vs_rest(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> tuple[dict[str, dict[str, float | None]], str | None]:
    """Per-class ROC-AUC and average precision; classes without positives or negatives get None."""
    scores: dict[str, dict[str, float | None]] = {}
    left_out = []
    for k, name in enumerate(class_names):
        positive = y_true == k
        if positive.all() or not positive.any():
            scores[name] = {"roc_auc": None, "pr_auc": None}
            left_out.append(f"{name} ({'the only class' if positive.any() else 'absent'})")
            continue
        scores[name] = {
            "roc_auc": float(roc_auc_score(positive, probs[:, k])),
            "pr_auc": float(average_precision_score(positive, probs[:, k])),
        }
    note = None
    if left_out:
        note = "left out of roc_auc_macro and pr_auc_macro: " + ", ".join(left_out)
    return scores, note


def _macro(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == y_true[:, None]).any(axis=1)))


def _most_confused(matrix: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: true, predicted, count and share of the true class."""
    support = matrix.sum(axis=1)
    cells = [
        (int(matrix[i, j]), i, j)
        for i in range(len(class_names))
        for j in range(len(class_names))
        if i != j and matrix[i, j] > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], -cell[0] / support[cell[1]], cell[1], cell[2]))
    return [
        {
            "true": class_names[i],
            "predicted": class_names[j],
            "count": count,
            "rate": float(count / support[i]),
        }
        for count, i, j in cells[:MOST_CONFUSED]
    ]


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Headline, per-class, ranking and calibration metrics, the confusion matrix and the baseline.

    ``probs`` is (N, C) with C == len(class_names); labels are indices into ``class_names``.
    Metrics that are undefined on the data (e.g. an AUC of a class without samples) are None.
    """
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(class_names)))
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    counts = np.bincount(y_true, minlength=len(class_names))
    ranking, auc_note = _one_vs_rest(y_true, probs, class_names)
    metrics: dict[str, Any] = {
        "samples": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(matrix),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "cohen_kappa": _cohen_kappa(y_true, y_pred, labels),
        "krippendorff_alpha": _krippendorff_alpha(y_true, y_pred, len(class_names)),
        "roc_auc_macro": _macro([ranking[n]["roc_auc"] for n in class_names]),
        "pr_auc_macro": _macro([ranking[n]["pr_auc"] for n in class_names]),
        "top2_accuracy": _top_k_accuracy(y_true, probs, min(2, len(class_names))),
        "ece": expected_calibration_error(probs, y_true, ECE_BINS),
        "majority_accuracy": float(counts.max() / max(1, counts.sum())),
        "per_class": {
            name: {**report[name], "support": int(counts[k]), **ranking[name]}
            for k, name in enumerate(class_names)
        },
        "most_confused": _most_confused(matrix, class_names),
        "confusion_matrix": matrix.tolist(),
        "classes": list(class_names),
    }
    if auc_note:
        metrics["auc_note"] = auc_note
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A plain-text summary: headline numbers, per-class table and confusion matrix."""
    names = metrics["classes"]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"samples      {metrics['samples']}",
        f"accuracy     {metrics['accuracy']:.4f}"
        f"   (majority class {metrics['majority_accuracy']:.4f})",
        f"macro-F1     {metrics['macro_f1']:.4f}",
        f"balanced acc {metrics['balanced_accuracy']:.4f}",
    ]
    if metrics.get("prior_tau"):
        lines.append(f"prior tau    {metrics['prior_tau']:g} (probabilities / prior^tau)")
    if "crowd" in metrics:
        crowd = metrics["crowd"]
        lines.append(
            f"crowd        KL(votes || model) {crowd['kl_divergence']:.4f}   "
            f"predicted class got a vote {crowd['predicted_class_voted']:.4f}"
        )
    if metrics.get("unanswerable_classes"):
        lines.append(
            "not scored   the model has no class "
            + ", ".join(metrics["unanswerable_classes"])
            + ": images whose majority it is are left out"
        )
    if metrics.get("unscored_model_classes"):
        lines.append(
            "not scored   the data has no label "
            + ", ".join(metrics["unscored_model_classes"])
            + ": its probability is dropped and the rest renormalised"
        )
    answers = metrics.get("answers", {})
    lines += ["", f"{'class':<{width}} precision  recall  f1-score  support  answered"]
    for name in names:
        row = metrics["per_class"][name]
        share = answers.get(name, {}).get("predicted")
        answered = f"{share:>10.3f}" if share is not None else ""
        lines.append(
            f"{name:<{width}} {row['precision']:>9.4f} {row['recall']:>7.4f} "
            f"{row['f1-score']:>9.4f} {int(row['support']):>8d}{answered}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cell = max(6, *(len(n) for n in names)) + 1
    lines.append(" " * width + "".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    if "valence_arousal" in metrics:
        lines += ["", "valence and arousal", *format_va(metrics["valence_arousal"])]
    return "\n".join(lines)
