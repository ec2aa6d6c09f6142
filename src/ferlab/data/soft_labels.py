"""Crowd labels: a CSV of per-class vote counts (or probabilities) laid over an image set.

The CSV has a file column (``file`` or ``path``, relative to the data set's root) and one column
per class. Column names map to ferlab's class names (``happiness`` → ``happy``, ``sadness`` →
``sad``, ``anger`` → ``angry``); ``unknown`` and ``NF`` (not a face) are votes that name no class.
Columns that hold no number in any row (such as FER+'s ``ferplus_image``) are ignored.

Each image's **majority** is the column with the most votes, ties to the column that comes first
in the file. An image whose majority names no class (``unknown``, ``NF``, or a class that the
class options drop) is left out; the other images keep their votes for the kept classes only.
"""

from __future__ import annotations

import csv
import math
import os
import posixpath
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from ferlab.data.classes import CANONICAL_CLASSES, CLASS_SPELLINGS, ClassMapping, canonical_order
from ferlab.data.sources import DatasetSource
from ferlab.errors import DataError

FILE_COLUMNS = ("file", "path")
NON_CLASS_COLUMNS = ("unknown", "nf")
"""Votes that name no expression (compared lower-case)."""
KNOWN_CLASSES = frozenset(name for names in CANONICAL_CLASSES.values() for name in names)
"""Expression names of the known data sets: a column named so is a class even where the images'
folders lack it (FER+'s contempt over FER2013's seven folders)."""
_HEADER_SHOWN = 120  # characters of a bad header quoted in an error
_VOTE_SUMS = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))
"""Training reads votes as float32: a row's sum must be a normal float32 for its shares."""


@dataclass
class VoteTable:
    """Votes read from a labels CSV: ``votes[i, k]`` for the image ``files[i]`` and column
    ``columns[k]`` (class names after aliases, then the non-class columns as written)."""

    path: Path
    files: list[str]
    columns: list[str]
    votes: np.ndarray
    bad_rows: list[tuple[str, str]]
    """(``csv:line N``, reason) for rows left out."""
    lines: list[int] = field(default_factory=list)
    """The CSV line of each of ``files``."""
    bad_files: set[str] = field(default_factory=set)
    """The files named by rows left out (their images are reported once, with the row)."""

    @property
    def classes(self) -> list[str]:
        """The columns that are expression classes, in canonical order."""
        return canonical_order(c for c in self.columns if c.lower() not in NON_CLASS_COLUMNS)

    def without_columns(self, dropped: list[str]) -> VoteTable:
        """A copy without the ``dropped`` columns; rows left with no votes become bad rows."""
        kept = [k for k, name in enumerate(self.columns) if name not in dropped]
        votes = self.votes[:, kept]
        alive = votes.sum(axis=1) > 0
        bad = [
            (f"{self.path}:line {self.lines[i]}", f"no votes for {self.files[i]}")
            for i in np.flatnonzero(~alive)
        ]
        return replace(
            self,
            files=[f for f, keep in zip(self.files, alive, strict=True) if keep],
            columns=[self.columns[k] for k in kept],
            votes=votes[alive],
            bad_rows=[*self.bad_rows, *bad],
            lines=[n for n, keep in zip(self.lines, alive, strict=True) if keep],
            bad_files=self.bad_files | {self.files[i] for i in np.flatnonzero(~alive)},
        )

    def index(self, root: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """(file → row, bad rows): a file is a POSIX path relative to ``root``, the data root.
        A row may name its file relative to the root (``./``, ``..`` that comes back in, or
        Windows ``\\`` separators allowed) or by an absolute path under it; a row that names a
        file outside the root, or one an earlier row names, is a bad row."""
        base = PurePosixPath(os.path.abspath(root))
        roots = {base, PurePosixPath(root.resolve())}
        index: dict[str, int] = {}
        bad = []
        for i, name in enumerate(self.files):
            where = f"{self.path}:line {self.lines[i]}"
            full = PurePosixPath(posixpath.normpath(base / name.replace("\\", "/")))
            under = next((r for r in roots if full.is_relative_to(r)), None)
            key = None if under is None else str(full.relative_to(under))
            if key is None:
                bad.append((where, f"{name} is outside the data root {root}"))
            elif key in index:
                bad.append((where, f"second row for {name} (first: line {self.lines[index[key]]})"))
            else:
                index[key] = i
        return index, bad


def vote_class(column: str) -> str:
    """A vote column's class: an alias or any case of a known expression name gives ferlab's
    name (``Happiness``, ``Happy`` → ``happy``); other names stay as written."""
    lowered = column.lower()
    if lowered in CLASS_SPELLINGS:
        return CLASS_SPELLINGS[lowered]
    return lowered if lowered in KNOWN_CLASSES else column


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_float(text: str) -> bool:
    """Whether ``text`` is a float, ``nan`` and ``inf`` included."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_vote_table(path: str | Path) -> VoteTable:
    """Read a labels CSV; bad rows (negative, non-numeric or all-zero votes, votes whose sum is
    outside float32's range, duplicates) are listed in ``bad_rows``, a bad header or an empty
    file raises DataError."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{file}: labels file not found")
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise DataError(f"{file}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise DataError(f"{file}: not a readable CSV ({exc})") from None
    if not rows:
        raise DataError(f"{file}: empty labels file")
    header = [cell.strip() for cell in rows[0]]
    lowered = [name.lower() for name in header]
    file_column = next((lowered.index(name) for name in FILE_COLUMNS if name in lowered), None)
    if file_column is None:
        shown = ",".join(header)[:_HEADER_SHOWN]
        raise DataError(
            f"{file}: no file column in header '{shown}'; expected 'file' (or 'path') and one "
            "column of votes per class"
        )
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    vote_columns = [
        k
        for k in range(len(header))
        if k != file_column
        and any(len(row) > k and _number(row[k].strip()) is not None for row in body)
    ]
    names = [vote_class(header[k]) for k in vote_columns]
    classes = [n for n in names if n.lower() not in NON_CLASS_COLUMNS]
    if len(set(names)) != len(names):
        raise DataError(f"{file}: two vote columns name the same class: {', '.join(names)}")
    if len(classes) < 2:
        raise DataError(
            f"{file}: fewer than 2 class columns with votes (found {', '.join(names) or 'none'})"
        )
    files: list[str] = []
    lines: list[int] = []
    votes: list[list[float]] = []
    bad: list[tuple[str, str]] = []
    bad_files: set[str] = set()
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{file}:line {line}"
        if len(row) != len(header):
            bad.append((where, f"{len(row)} fields, expected {len(header)}"))
            continue
        name = Path(row[file_column].strip()).as_posix()
        values = [_number(row[k].strip()) for k in vote_columns]
        reason = None
        if not row[file_column].strip():
            bad.append((where, "empty file name"))
        elif any(v is None for v in values):
            text = next(
                row[k].strip() for k, v in zip(vote_columns, values, strict=True) if v is None
            )
            reason = f"a vote of '{text}'" if _is_float(text) else "a vote is not a number"
        elif any(v < 0 for v in values):  # type: ignore[operator]
            reason = "a negative vote"
        elif sum(values) <= 0:  # type: ignore[arg-type]
            reason = "no votes"
        elif not _VOTE_SUMS[0] <= sum(values) <= _VOTE_SUMS[1]:  # type: ignore[arg-type]
            low, high = _VOTE_SUMS
            reason = f"votes sum outside float32's range ({low:.1e} to {high:.1e})"
        elif name in seen:
            bad.append((where, f"second row for {name}"))
        else:
            seen.add(name)
            files.append(name)
            lines.append(line)
            votes.append(values)  # type: ignore[arg-type]
        if reason is not None:
            bad.append((where, f"{reason} for {name}"))
            bad_files.add(name)
    if not files:
        first = f" (first: {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise DataError(f"{file}: no usable rows of votes{first}")
    return VoteTable(file, files, names, np.asarray(votes, dtype=np.float64), bad, lines, bad_files)


def mapped_votes(
    votes: np.ndarray, columns: list[str], mapping: ClassMapping
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, majority)``: votes summed into the mapping's classes (N, C), and the majority
    label id per row, -1 where the majority names no kept class.

    Columns merged into one class stand at their first member's place for ties.
    """
    groups: dict[str, list[int]] = {}
    for k, name in enumerate(columns):
        label = mapping.label_of(name)
        groups.setdefault(f"class:{label}" if label is not None else f"other:{k}", []).append(k)
    keys = list(groups)  # insertion order = position of each group's first column
    totals = np.stack([votes[:, groups[key]].sum(axis=1) for key in keys], axis=1)
    winner = totals.argmax(axis=1)
    label_of_group = np.array(
        [int(key.split(":")[1]) if key.startswith("class:") else -1 for key in keys]
    )
    targets = np.zeros((len(votes), mapping.num_classes), dtype=np.float64)
    for key in keys:
        if key.startswith("class:"):
            targets[:, int(key.split(":")[1])] = votes[:, groups[key]].sum(axis=1)
    return targets, label_of_group[winner]


@dataclass
class SoftLabelReport:
    """What laying a vote table over a data set matched, left out and skipped."""

    without_row: list[str]
    """Images of the data set that have no row in the labels file."""
    unused_rows: int
    """Rows whose file is not an image of the data set."""
    majority_excluded: Counter[str]
    """Images left out because their majority names no class, by that column."""
    bad_rows: list[tuple[str, str]]

    def summary(self) -> str:
        parts = []
        if self.majority_excluded:
            counts = ", ".join(f"{k} {n}" for k, n in self.majority_excluded.most_common())
            parts.append(f"{sum(self.majority_excluded.values())} left out by majority ({counts})")
        if self.without_row:
            parts.append(f"{len(self.without_row)} images without a row")
        if self.unused_rows:
            parts.append(f"{self.unused_rows} rows without an image")
        if self.bad_rows:
            where, reason = self.bad_rows[0]
            parts.append(f"{len(self.bad_rows)} bad rows (first: {where}: {reason})")
        return "; ".join(parts)


def attach_votes(source: DatasetSource, table: VoteTable) -> tuple[DatasetSource, SoftLabelReport]:
    """A copy of ``source`` whose split tables carry ``votes`` (N, K over the table's columns)
    and whose labels are each image's majority column; images without a row are dropped and
    reported with the bad rows in ``skipped``. The data set's classes become the table's.

    A numeric column that names neither a class of the data set nor a known expression (an age,
    an id) is left out with a warning, as is said of data classes that no column names."""
    extra = [
        c
        for c in table.columns
        if c.lower() not in NON_CLASS_COLUMNS and c not in KNOWN_CLASSES and c not in source.classes
    ]
    if extra:
        warnings.warn(
            f"{table.path}: left out column(s) {', '.join(extra)}: numbers, but not a class of "
            f"the data ({', '.join(source.classes)}) nor a known expression; name the column "
            "after a class to count its votes",
            stacklevel=2,
        )
        table = table.without_columns(extra)
        if len(table.classes) < 2:
            raise DataError(f"{table.path}: fewer than 2 class columns with votes")
    unnamed = [c for c in source.classes if c not in table.columns]
    if unnamed:
        warnings.warn(
            f"{table.path}: no column for class(es) {', '.join(unnamed)} of the data: the "
            "labels come from the votes, so those images take the class their votes give",
            stacklevel=2,
        )
    index, unindexed = table.index(source.root)
    bad_rows = sorted([*table.bad_rows, *unindexed], key=_line_number)
    if bad_rows and source.on_bad_file == "error":
        where, reason = bad_rows[0]
        raise DataError(f"{where}: {reason}")
    _warn_bad_rows(table.path, bad_rows)
    used: set[int] = set()
    without_row: list[str] = []
    majority_excluded: Counter[str] = Counter()
    splits = {}
    for name, split in source.splits.items():
        if split.paths is None:
            raise DataError(
                f"{table.path}: labels files name image files; {split.origin} holds pixels "
                "(convert it to image folders with 'ferlab data convert')"
            )
        rows: list[int] = []
        keep: list[int] = []
        for i, image in enumerate(split.paths):
            try:
                key = Path(image).relative_to(source.root).as_posix()
            except ValueError:
                key = Path(image).as_posix()
            row = index.get(key)
            if row is None:
                without_row.append(key)
                continue
            rows.append(row)
            keep.append(i)
        picked = split.subset(keep)
        votes = table.votes[rows] if rows else np.zeros((0, len(table.columns)))
        used.update(rows)
        majority = [table.columns[k] for k in votes.argmax(axis=1)] if rows else []
        for label in majority:
            if label.lower() in NON_CLASS_COLUMNS:
                majority_excluded[label] += 1
        splits[name] = replace(picked, labels=majority, votes=votes)
    if not used:
        raise DataError(
            f"{table.path}: none of its {len(table.files)} rows names an image under "
            f"{source.root} (first row: {table.files[0]}); the file column holds paths relative "
            "to the data root, like train/angry/0001.png"
        )
    unused = sorted(set(index.values()) - used)
    report = SoftLabelReport(
        without_row=without_row,
        unused_rows=len(unused),
        majority_excluded=majority_excluded,
        bad_rows=bad_rows,
    )
    attached = replace(
        source,
        splits=splits,
        classes=table.classes,
        vote_columns=list(table.columns),
        label_only_classes=[c for c in table.classes if c not in source.classes],
        skipped=[
            *source.skipped,
            *bad_rows,
            *(
                (str(source.root / key), "no row in the labels file")
                for key in without_row
                if key not in table.bad_files
            ),
        ],
        unmatched_rows=[
            (f"{table.path}:line {table.lines[i]}", f"no image {table.files[i]} in the data")
            for i in unused
        ],
        excluded={
            **source.excluded,
            **{f"majority {k}": n for k, n in majority_excluded.items()},
        },
    )
    return attached, report


def _line_number(row: tuple[str, str]) -> int:
    """The line of a bad row's ``csv:line N``."""
    return int(row[0].rpartition(":line ")[2])


def _warn_bad_rows(path: Path, bad_rows: list[tuple[str, str]], shown: int = 5) -> None:
    """One warning that lists the rows left out, by line, the first ``shown`` of them."""
    if not bad_rows:
        return
    rows = "; ".join(f"line {_line_number(row)}: {row[1]}" for row in bad_rows[:shown])
    more = f" and {len(bad_rows) - shown} more" if len(bad_rows) > shown else ""
    warnings.warn(
        f"{path}: left out {len(bad_rows)} bad row(s): {rows}{more} (--on-bad-file error stops "
        "at the first)",
        stacklevel=3,
    )
