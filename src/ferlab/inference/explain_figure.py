"""A photo with the heatmap over each face, its box and caption, and the colour scale, as PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ferlab.inference.face_options import DEFAULT_MARGIN
from ferlab.inference.results import Explanation

CMAP = "jet"  # the colour map of the crop overlays (OpenCV's COLORMAP_JET)
WIDTH_IN = 9.0
HEATMAP_ALPHA = 0.5


def _square(box: tuple[int, int, int, int], margin: float) -> tuple[float, float, float]:
    """(left, top, side) of the square crop around ``box``, as ``square_crop`` takes it."""
    x1, y1, x2, y2 = box
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    return round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2), side


def explanation_figure(
    image_rgb: np.ndarray,
    explanations: list[Explanation],
    method: str,
    *,
    margin: float = DEFAULT_MARGIN,
    title: str = "",
) -> bytes:
    """The photo with each face's heatmap laid over its crop square, the face boxed and captioned
    (number, class, probability, method), a colour bar, and a note on how the probabilities and
    heatmaps were made."""
    height, width = image_rgb.shape[:2]
    figure = Figure(figsize=(WIDTH_IN, WIDTH_IN * height / width * 0.9 + 0.9), dpi=100)
    figure.set_layout_engine("constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.imshow(image_rgb)
    line = max(1.5, width / 400)
    for item in explanations:
        if item.heatmap is None:
            continue
        left, top, side = (0, 0, None) if item.box is None else _square(item.box, margin)
        right, bottom = (width, height) if side is None else (left + side, top + side)
        ax.imshow(
            item.heatmap,
            cmap=CMAP,
            vmin=0,
            vmax=1,
            alpha=HEATMAP_ALPHA,
            extent=(left, right, bottom, top),
            interpolation="bilinear",
        )
        x1, y1, x2, y2 = item.box or (0, 0, width, height)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", lw=line))
        ax.text(
            x1,
            y1,
            f"{item.face}. {item.label} {item.score:.2f} ({method})",
            va="bottom" if y1 > height * 0.08 else "top",
            fontsize=11,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.75, "pad": 2, "edgecolor": "none"},
        )
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.set_axis_off()
    scale = ScalarMappable(Normalize(0, 1), CMAP)
    bar = figure.colorbar(scale, ax=ax, shrink=0.8, pad=0.02)
    bar.set_label(f"{method}: weight of the region for the class (0 low, 1 high)")
    tta = explanations[0].tta if explanations else "none"
    note = (
        f"probability: mean over the {tta} test-time views, as predict gives it; "
        "heatmap: of one view, the crop as it is"
        if tta != "none"
        else "probability and heatmap: of the crop as it is (no test-time augmentation)"
    )
    figure.suptitle(f"{title}\n{note}" if title else note, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
