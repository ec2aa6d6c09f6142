"""Valence/arousal figures: predicted against true per dimension, and the circumplex plane."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.patches import Circle

from ferlab.evaluation.plots import Plot, _figure, _png
from ferlab.evaluation.va_metrics import VA_DIMENSIONS, ccc

MAX_POINTS = 3000  # points drawn per panel, a seeded sample beyond that


def _sample(count: int, seed: int = 0) -> np.ndarray:
    if count <= MAX_POINTS:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, MAX_POINTS, replace=False))


def _unit_square(ax: Axes) -> None:
    ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), aspect="equal")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.axvline(0, color="gray", linewidth=0.8)


def va_scatter_plot(va_true: np.ndarray, va_pred: np.ndarray) -> bytes:
    """Predicted against true valence and arousal, with the identity line and the CCC."""
    figure = _figure(11, 5.2)
    for k, (ax, name) in enumerate(zip(figure.subplots(1, 2), VA_DIMENSIONS, strict=True)):
        present = np.flatnonzero(~np.isnan(va_true[:, k]))
        shown = present[_sample(len(present))]
        ax.scatter(va_true[shown, k], va_pred[shown, k], s=10, alpha=0.5, edgecolors="none")
        _unit_square(ax)
        ax.plot([-1, 1], [-1, 1], color="black", linestyle=":", linewidth=1)
        value = ccc(va_true[present, k], va_pred[present, k])
        title = f"{name} (CCC {value:.3f})" if value is not None else name
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=title)
    return _png(figure)


def circumplex_plot(
    va_true: np.ndarray,
    va_pred: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: list[str],
) -> bytes:
    """The valence-arousal plane: true points coloured by true class beside predicted points
    coloured by predicted class, with the unit circle."""
    present = np.flatnonzero(~np.isnan(va_true).any(axis=1))
    shown = present[_sample(len(present))]
    colours = colormaps["tab10"].colors
    figure = _figure(12, 6)
    panels = (("true", va_true, labels), ("predicted", va_pred, predicted))
    for ax, (title, points, classes_of) in zip(figure.subplots(1, 2), panels, strict=True):
        for k, name in enumerate(classes):
            members = shown[classes_of[shown] == k]
            if len(members):
                ax.scatter(
                    points[members, 0],
                    points[members, 1],
                    s=12,
                    alpha=0.7,
                    color=colours[k % len(colours)],
                    label=name,
                    edgecolors="none",
                )
        ax.add_patch(Circle((0, 0), 1, fill=False, color="gray", linestyle=":", linewidth=1))
        _unit_square(ax)
        ax.set(xlabel="valence", ylabel="arousal", title=f"{title} valence and arousal")
        ax.legend(fontsize=8, loc="lower left", markerscale=2)
    return _png(figure)


def va_plots(
    va_true: np.ndarray,
    va_pred: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: list[str],
) -> list[Plot]:
    """The report's valence/arousal figures."""
    return [
        Plot(
            "va_scatter",
            "Valence and arousal: predicted against true",
            va_scatter_plot(va_true, va_pred),
        ),
        Plot(
            "circumplex",
            "Valence-arousal plane, coloured by class",
            circumplex_plot(va_true, va_pred, labels, predicted, classes),
        ),
    ]
