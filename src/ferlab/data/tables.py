"""The split table every data set reader fills, and the image files they list."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ferlab.data.classes import canonical_order

IMAGE_EXTENSIONS = {
    *(".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".pgm", ".ppm", ".pbm", ".pnm"),  # Netpbm, as some face sets (ORL, Yale) ship
}


@dataclass
class SplitTable:
    """The samples of one split: labels plus image paths or FER2013 pixels."""

    name: str
    """"train", "val" or "test"."""
    labels: list[str]
    """Source class name per sample."""
    paths: list[Path] | None
    """Image files, or None when pixels are given."""
    pixels: np.ndarray | None
    """uint8 (N, H, W) for the FER2013 CSV, else None."""
    valence: np.ndarray | None
    """float32 (N,), NaN where missing; None if the source has none."""
    arousal: np.ndarray | None
    origin: str
    """Path of the folder or CSV the samples came from, for messages and cache keys."""
    votes: np.ndarray | None = None
    """float (N, K) crowd votes over ``DatasetSource.vote_columns``; None without a labels file."""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> SplitTable:
        """The samples at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.intp)

        def pick(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[idx]

        return replace(
            self,
            labels=[self.labels[i] for i in idx],
            paths=None if self.paths is None else [self.paths[i] for i in idx],
            pixels=pick(self.pixels),
            valence=pick(self.valence),
            arousal=pick(self.arousal),
            votes=pick(self.votes),
        )

    def class_counts(self) -> dict[str, int]:
        """Samples per source class, in canonical order."""
        counts = Counter(self.labels)
        return {name: counts[name] for name in canonical_order(counts)}


def joined_tables(tables: Sequence[SplitTable], name: str, origin: str) -> SplitTable:
    """One table of the samples of ``tables``, in order; a column that one of them lacks is
    left out (None)."""

    def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        present = [array for array in arrays if array is not None]
        return np.concatenate(present) if len(present) == len(arrays) else None

    paths = [table.paths for table in tables]
    return SplitTable(
        name=name,
        labels=[label for table in tables for label in table.labels],
        paths=None if any(p is None for p in paths) else [f for p in paths if p for f in p],
        pixels=joined([table.pixels for table in tables]),
        valence=joined([table.valence for table in tables]),
        arousal=joined([table.arousal for table in tables]),
        origin=origin,
        votes=joined([table.votes for table in tables]),
    )


def unreadable_reason(exc: BaseException, path: str | Path) -> str:
    """Why ``path`` could not be read, in one line: the first line of ``exc`` without the quoted
    path PIL repeats in it (the report names the file already), else the exception's type."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return reason.replace(f" {str(path)!r}", "") or type(exc).__name__
