"""A path,label,split manifest without the cross-split duplicates ``ferlab data inspect`` finds.

Of every exact or near duplicate pair that spans two splits, the copy in the earlier split
(train, then val, then test) is kept and the other dropped: training data stays whole and the
evaluation splits lose the images the model may have seen. Duplicates within a split are kept.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferlab.data.inspect import inspect_dataset, shown_path
from ferlab.data.sources import SPLITS, load_dataset
from ferlab.errors import ConfigError, DataError
from ferlab.names import is_utf8
from ferlab.outputs import write_atomic

MANIFEST_HEADER = ("path", "label", "split")
DROPPED_HEADER = ("path", "label", "split", "kind", "duplicate_of", "duplicate_split", "reason")


@dataclass
class Deduplicated:
    """The manifest rows kept and, per dropped image, why: (split, id) -> (kind, other)."""

    rows: list[tuple[str, str, str]]
    dropped: dict[tuple[str, str], tuple[str, dict[str, str]]] = field(default_factory=dict)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    """Files (or manifest rows) left out because they could not be read: file, reason."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Dropped images per split and kind (exact, near)."""
        table: dict[str, dict[str, int]] = {}
        for (split, _), (kind, _) in self.dropped.items():
            entry = table.setdefault(split, {"exact": 0, "near": 0})
            entry[kind] += 1
        return {split: table[split] for split in SPLITS if split in table}


def _rank(split: str) -> int:
    return SPLITS.index(split)


def _drop_later(
    dropped: dict[tuple[str, str], tuple[str, dict[str, str]]],
    kind: str,
    a: dict[str, str],
    b: dict[str, str],
) -> None:
    """Drop the copy of a cross-split pair that lies in the later split (exact wins over near)."""
    if a["split"] == b["split"]:
        return
    kept, gone = (a, b) if _rank(a["split"]) < _rank(b["split"]) else (b, a)
    key = (gone["split"], gone["id"])
    if key not in dropped or (kind == "exact" and dropped[key][0] == "near"):
        dropped[key] = (kind, kept)


def _leaks(report: dict[str, Any]) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    duplicates = report["duplicates"]
    dropped: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
    for group in duplicates["exact_group_list"]:
        for k, a in enumerate(group):
            for b in group[k + 1 :]:
                _drop_later(dropped, "exact", a, b)
    for pair in duplicates["near_pair_list"]:
        _drop_later(dropped, "near", pair["a"], pair["b"])
    return dropped


def deduplicate(path: str | Path, *, near_threshold: int = 4, seed: int = 0) -> Deduplicated:
    """The images of a folder tree or manifest, split as ``inspect`` splits them, less the
    evaluation copies of cross-split exact and near (pHash within ``near_threshold`` bits)
    duplicates; paths are absolute."""
    source = load_dataset(path, seed=seed)
    if any(table.paths is None for table in source.splits.values()):
        raise ConfigError(
            f"{path}: dedupe writes a manifest of image files; convert the FER2013 CSV to "
            "folders first (ferlab data convert)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_dataset above has warned about the data already
        report = inspect_dataset(path, near_threshold=near_threshold, seed=seed).report
    dropped = _leaks(report)
    result = Deduplicated(rows=[], dropped=dropped, unreadable=report["unreadable"])
    unreadable = {entry["file"] for entry in report["unreadable"]}
    for split, table in source.splits.items():
        assert table.paths is not None
        for label, file in zip(table.labels, table.paths, strict=True):
            shown = shown_path(str(file), source)
            key = (split, shown)
            if key in dropped:
                result.labels[key] = label
            elif shown not in unreadable:
                result.rows.append((str(file.resolve()), label, split))
    return result


def _csv_bytes(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> bytes:
    for row in rows:
        if not is_utf8(row[0]):
            raise DataError(
                f"{row[0]}: a file name that is not UTF-8, which a CSV manifest cannot hold; "
                "rename the file"
            )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode()


def dropped_path(manifest: Path) -> Path:
    """Where ``write_deduplicated`` lists what it left out: ``<stem>-dropped.csv`` beside it."""
    return manifest.with_name(f"{manifest.stem}-dropped.csv")


def _relative_to(file: str, folder: Path) -> str:
    """``file`` (absolute) relative to ``folder`` when it lies below it, else as given: a
    manifest read from its own folder finds such files wherever the folder is moved."""
    path = Path(file)
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else file


def write_deduplicated(result: Deduplicated, manifest: Path) -> Path:
    """Write the manifest (paths below its folder relative to it, others absolute) and, beside
    it, ``<stem>-dropped.csv`` (each duplicate dropped and the copy kept, then each unreadable
    file, of kind ``unreadable`` with the reason); the latter's path."""
    dropped_rows = [
        (key[1], result.labels.get(key, ""), key[0], kind, kept["id"], kept["split"], "")
        for key, (kind, kept) in sorted(result.dropped.items())
    ] + [
        (entry["file"], "", "", "unreadable", "", "", entry["reason"])
        for entry in result.unreadable
    ]
    folder = manifest.expanduser().resolve().parent
    rows = [(_relative_to(path, folder), label, split) for path, label, split in result.rows]
    kept = _csv_bytes(MANIFEST_HEADER, rows)
    left_out = _csv_bytes(DROPPED_HEADER, dropped_rows)
    report = dropped_path(manifest)
    write_atomic(manifest, kept)
    write_atomic(report, left_out)
    return report
