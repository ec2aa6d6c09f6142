"""Per-track timelines of a video: frame counts, labels and one emotion-over-time plot per track."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ferlab.inference.image_results import FrameResult


@dataclass
class TrackTimeline:
    """A track's frames: times, smoothed probabilities (NaN rows where it was out of sight, so
    plotted lines break there) and label counts."""

    frames: int = 0
    first: float = 0.0
    last: float = 0.0
    times: list[float] = field(default_factory=list)
    probs: list[list[float]] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    last_frame: int = -1

    @property
    def label(self) -> str:
        """The label of most of its frames."""
        return self.labels.most_common(1)[0][0]


def add_frame(timelines: dict[int, TrackTimeline], result: FrameResult, classes: list[str]) -> None:
    """Append ``result``'s faces to their tracks' timelines (new tracks are added)."""
    for tracked in result.faces:
        timeline = timelines.get(tracked.track)
        if timeline is None:
            timeline = timelines[tracked.track] = TrackTimeline(first=result.time)
        elif result.index != timeline.last_frame + 1:
            timeline.times.append(result.time)
            timeline.probs.append([float("nan")] * len(classes))
        timeline.frames += 1
        timeline.last = result.time
        timeline.last_frame = result.index
        timeline.times.append(result.time)
        timeline.probs.append([tracked.face.probs[name] for name in classes])
        timeline.labels[tracked.face.label] += 1


def plot_timeline(path: Path, track: int, timeline: TrackTimeline, classes: list[str]) -> None:
    """Write a PNG of the track's class probabilities over time."""
    figure = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    probs = np.asarray(timeline.probs, dtype=float)
    for column, name in enumerate(classes):
        ax.plot(timeline.times, probs[:, column], label=name, linewidth=1.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"track {track}: {timeline.frames} frames, {timeline.first:.2f}-{timeline.last:.2f} s, "
        f"mostly {timeline.label}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    figure.savefig(path, format="png")
