"""PNG plots for `ferlab data inspect`: class distribution bars and per-class sample grids.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ferlab.outputs import write_atomic


def plot_class_distribution(counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Grouped bars: samples per class (x) for each split."""
    splits = list(counts)
    classes = list(counts[splits[0]]) if splits else []
    figure = Figure(figsize=(max(6.0, 1.1 * len(classes) + 2), 4), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(classes))
    for k, split in enumerate(splits):
        values = [counts[split][name] for name in classes]
        bars = axes.bar(x + (k - (len(splits) - 1) / 2) * width, values, width, label=split)
        axes.bar_label(bars, fontsize=7, padding=1)
    axes.set_xticks(x, classes, rotation=30, ha="right")
    axes.set_ylabel("images")
    axes.set_title("class distribution per split")
    axes.legend()
    _save(figure, path, dpi=100)
    return path


def plot_sample_grid(images: list[np.ndarray], title: str, path: Path, columns: int = 4) -> Path:
    """A grid of sample images (uint8 gray or RGB) under one title."""
    rows = max(1, math.ceil(len(images) / columns))
    figure = Figure(figsize=(1.6 * columns, 1.6 * rows + 0.4), layout="constrained")
    figure.suptitle(title)
    for k, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        axes.axis("off")
        if k < len(images):
            axes.imshow(images[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    _save(figure, path, dpi=80)
    return path


def _save(figure: Figure, path: Path, dpi: int) -> None:
    """The figure as a PNG written whole or not at all."""
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=dpi)
    write_atomic(path, png.getvalue())
