"""Classification metrics from labels, predictions and probabilities (scikit-learn underneath)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class report, confusion matrix and the majority-class baseline.

    ``probs`` is (N, C) with C == len(class_names); labels are indices into ``class_names``.
    """
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(class_names)))
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    counts = np.bincount(y_true, minlength=len(class_names))
    return {
        "samples": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "majority_accuracy": float(counts.max() / max(1, counts.sum())),
        "per_class": {name: report[name] for name in class_names},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(class_names),
    }


def format_report(metrics: dict[str, Any]) -> str:
    """A plain-text summary: headline numbers, per-class table and confusion matrix."""
    names = metrics["classes"]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"samples      {metrics['samples']}",
        f"accuracy     {metrics['accuracy']:.4f}"
        f"   (majority class {metrics['majority_accuracy']:.4f})",
        f"macro-F1     {metrics['macro_f1']:.4f}",
        "",
        f"{'class':<{width}} precision  recall  f1-score  support",
    ]
    for name in names:
        row = metrics["per_class"][name]
        lines.append(
            f"{name:<{width}} {row['precision']:>9.4f} {row['recall']:>7.4f} "
            f"{row['f1-score']:>9.4f} {int(row['support']):>8d}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cell = max(6, *(len(n) for n in names)) + 1
    lines.append(" " * width + "".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
