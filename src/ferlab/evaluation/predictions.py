"""``predictions.csv``: one row per scored image with its true and predicted class."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ferlab.data.sources import DatasetSource
from ferlab.outputs import write_atomic


def image_ids(source: DatasetSource, split: str, rows: np.ndarray) -> list[str]:
    """The file of each source row of ``split`` (``split#row`` for FER2013 CSV pixels)."""
    paths = source.splits[split].paths
    if paths is None:
        return [f"{split}#{row}" for row in rows.tolist()]
    return [str(paths[row]) for row in rows.tolist()]


def write_predictions(
    path: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]
) -> None:
    """Write path, true, predicted, one probability column per class (``p_<class>``), correct."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "true", "predicted", *(f"p_{name}" for name in classes), "correct"])
    predicted = probs.argmax(axis=1)
    for image, true, guess, row in zip(ids, labels, predicted, probs, strict=True):
        writer.writerow(
            [
                image,
                classes[true],
                classes[guess],
                *(f"{value:.4f}" for value in row),
                int(true == guess),
            ]
        )
    write_atomic(path, text.getvalue().encode())
