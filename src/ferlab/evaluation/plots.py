"""Evaluation figures drawn with matplotlib's Agg canvas (no display, no pyplot) as PNG bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve, roc_curve

from ferlab.evaluation.calibration import ReliabilityBins, reliability_bins
from ferlab.inference.runner import ModelRunner
from ferlab.models.artifact import ModelBundle

_RIGHT, _WRONG = "#1a7f37", "#cf222e"


@dataclass
class Plot:
    """A figure of the report: file stem, caption and PNG bytes."""

    name: str
    title: str
    png: bytes


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _show_image(ax: Axes, image: np.ndarray) -> None:
    """Draw an (H, W, 1) or (H, W, 3) uint8 image without axes."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_axis_off()


def confusion_matrix_plot(matrix: list[list[int]], classes: list[str]) -> bytes:
    """Counts and row-normalised shares (recall on the diagonal), side by side."""
    counts = np.asarray(matrix, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    size = 2.0 + 0.6 * len(classes)
    figure = _figure(2 * size + 1, size)
    for ax, values, title, fmt in zip(
        figure.subplots(1, 2),
        (counts, shares),
        ("counts", "share of the true class"),
        ("{:.0f}", "{:.2f}"),
        strict=True,
    ):
        image = ax.imshow(values, cmap="Blues")
        figure.colorbar(image, ax=ax, shrink=0.8)
        limit = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            color = "white" if value > limit else "black"
            ax.text(j, i, fmt.format(value), ha="center", va="center", color=color, fontsize=8)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right")
        ax.set_yticks(ticks, classes)
        ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix: {title}")
    return _png(figure)


def roc_pr_plot(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> bytes:
    """One-vs-rest ROC and precision-recall curves per class (classes without both outcomes
    are left out)."""
    figure = _figure(12, 5)
    roc_ax, pr_ax = figure.subplots(1, 2)
    for k, name in enumerate(classes):
        positive = y_true == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        precision, recall, _ = precision_recall_curve(positive, probs[:, k])
        roc_ax.plot(fpr, tpr, label=name)
        pr_ax.plot(recall, precision, label=name, drawstyle="steps-post")
    roc_ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one-vs-rest)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (one-vs-rest)")
    for ax in (roc_ax, pr_ax):
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right" if ax is roc_ax else "lower left")
        else:
            ax.text(0.5, 0.5, "no curve: needs images of\ntwo classes or more", ha="center")
    return _png(figure)


def reliability_plot(before: ReliabilityBins, after: ReliabilityBins | None) -> bytes:
    """Accuracy against confidence per bin, before and (if fitted) after temperature scaling."""
    panels = [("before temperature scaling", before)]
    if after is not None:
        panels.append(("after temperature scaling", after))
    figure = _figure(5.5 * len(panels), 5)
    for ax, (title, table) in zip(
        np.atleast_1d(figure.subplots(1, len(panels))), panels, strict=True
    ):
        centers = (table.edges[:-1] + table.edges[1:]) / 2
        width = table.edges[1] - table.edges[0]
        filled = table.counts > 0
        ax.bar(
            centers[filled],
            table.accuracy[filled],
            width=width,
            edgecolor="black",
            label="accuracy",
        )
        ax.plot(
            centers[filled], table.confidence[filled], "o", color="orange", label="mean confidence"
        )
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence (max probability)",
            ylabel="accuracy",
            title=title,
        )
        ax.legend(fontsize=8, loc="upper left")
    return _png(figure)


def _column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(row.get(name) or "nan") for row in rows])


def training_curves_plot(rows: list[dict[str, str]]) -> bytes:
    """Loss, accuracy (and val macro-F1, and val CCCs of a multi-task run) and learning rate per
    epoch from a run's metrics.csv."""
    epochs = _column(rows, "epoch")
    figure = _figure(15, 4)
    loss_ax, acc_ax, lr_ax = figure.subplots(1, 3)
    ccc = tuple(name for name in ("val_ccc_valence", "val_ccc_arousal") if name in rows[0])
    for ax, names, title in (
        (loss_ax, ("train_loss", "val_loss"), "loss"),
        (
            acc_ax,
            ("train_acc", "val_acc", "val_f1", *ccc),
            "accuracy" + (" and CCC" if ccc else ""),
        ),
        (lr_ax, ("lr",), "learning rate"),
    ):
        for name in names:
            ax.plot(epochs, _column(rows, name), marker="o", markersize=3, label=name)
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    if np.nanmin(_column(rows, "lr"), initial=np.inf) > 0:
        lr_ax.set_yscale("log")
    return _png(figure)


def _top_probs(row: np.ndarray, classes: list[str], k: int = 3) -> str:
    return "\n".join(f"{classes[i]} {row[i]:.2f}" for i in np.argsort(-row)[:k])


def sample_grid_plot(
    images: torch.Tensor,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    count: int = 16,
    seed: int = 0,
) -> bytes:
    """Up to ``count`` test images, half correct and half wrong where there are enough, each with
    its true class and top probabilities (green when right, red when wrong)."""
    rng = np.random.default_rng(seed)
    right = probs.argmax(axis=1) == labels
    wrong_pick = rng.permutation(np.flatnonzero(~right))[: count // 2]
    right_pick = rng.permutation(np.flatnonzero(right))[: count - len(wrong_pick)]
    chosen = np.concatenate([right_pick, wrong_pick]).astype(int)
    return _labelled_grid(images, chosen, labels, probs, classes)


def _labelled_grid(
    images: torch.Tensor,
    chosen: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
) -> bytes:
    """The ``chosen`` images, 8 a row, each titled with its true class and top probabilities
    (green when the prediction is right, red when wrong); "none" when nothing is chosen."""
    right = probs.argmax(axis=1) == labels
    columns = max(1, min(8, len(chosen)))
    rows = max(1, -(-len(chosen) // columns))
    figure = _figure(2 * columns, 2.5 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if len(chosen) == 0:
        axes[0].text(0.5, 0.5, "none", ha="center", va="center")
    for ax, index in zip(axes, chosen, strict=False):
        _show_image(ax, images[index].permute(1, 2, 0).numpy())
        color = _RIGHT if right[index] else _WRONG
        ax.set_title(
            f"true {classes[labels[index]]}\n{_top_probs(probs[index], classes)}",
            fontsize=8,
            color=color,
        )
    return _png(figure)


def confident_mistakes(labels: np.ndarray, probs: np.ndarray, count: int = 16) -> np.ndarray:
    """Indices of the ``count`` wrong predictions made with the highest probability, most
    confident first."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:count]


def gradcam_plot(
    bundle: ModelBundle,
    images: torch.Tensor,
    labels: np.ndarray,
    probs: np.ndarray,
    per_class: int = 3,
    classes: list[str] | None = None,
) -> bytes:
    """Grad-CAM overlays (for the model's predicted class) of the first ``per_class`` faces of
    each true class; one row per class (``classes``: those of ``labels``, default the model's)."""
    from ferlab.inference.gradcam import gradcam_heatmaps, gradcam_overlays

    classes = bundle.classes if classes is None else classes
    picks = [np.flatnonzero(labels == k)[:per_class] for k in range(len(classes))]
    chosen = np.concatenate(picks).astype(int)
    faces = images[torch.from_numpy(chosen)]
    overlays = gradcam_overlays(faces, gradcam_heatmaps(bundle, faces))
    figure = _figure(2.2 * per_class, 2.4 * len(classes))
    axes = np.atleast_2d(figure.subplots(len(classes), per_class))
    for ax in axes.ravel():
        ax.set_axis_off()
    at = 0
    for k, pick in enumerate(picks):
        for column, index in enumerate(pick):
            ax = axes[k, column]
            _show_image(ax, overlays[at])
            predicted = int(probs[index].argmax())
            color = _RIGHT if predicted == k else _WRONG
            ax.set_title(
                f"true {classes[k]}\npred {classes[predicted]} {probs[index, predicted]:.2f}",
                fontsize=8,
                color=color,
            )
            at += 1
    return _png(figure)


def report_plots(
    runner: ModelRunner,
    metrics: dict[str, Any],
    images: torch.Tensor,
    labels: np.ndarray,
    probs: np.ndarray,
    scaled: np.ndarray | None,
    history: list[dict[str, str]],
    bins: int = 15,
    classes: list[str] | None = None,
) -> list[Plot]:
    """The report's figures, in order; training curves only where ``history`` has epochs, Grad-CAM
    only for a PyTorch model.

    ``scaled`` holds the probabilities after temperature scaling (None without a fit);
    ``classes``: the classes ``labels`` and ``probs`` are over (default: the model's).
    """
    classes = runner.classes if classes is None else classes
    after = reliability_bins(scaled, labels, bins) if scaled is not None else None
    figures = [
        Plot(
            "confusion_matrix",
            "Confusion matrix",
            confusion_matrix_plot(metrics["confusion_matrix"], classes),
        ),
        Plot("roc_pr", "ROC and precision-recall curves", roc_pr_plot(labels, probs, classes)),
        Plot(
            "reliability",
            "Reliability diagram",
            reliability_plot(reliability_bins(probs, labels, bins), after),
        ),
    ]
    if history:
        figures.append(Plot("training_curves", "Training curves", training_curves_plot(history)))
    figures.append(
        Plot(
            "samples",
            "Sample predictions (green: right, red: wrong)",
            sample_grid_plot(images, labels, probs, classes),
        )
    )
    figures.append(
        Plot(
            "mistakes",
            "Most confident mistakes (true class, top probabilities)",
            _labelled_grid(images, confident_mistakes(labels, probs), labels, probs, classes),
        )
    )
    if runner.bundle is not None:
        figures.append(
            Plot(
                "gradcam",
                "Grad-CAM of the predicted class",
                gradcam_plot(runner.bundle, images, labels, probs, classes=classes),
            )
        )
    return figures
