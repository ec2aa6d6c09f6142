"""Reading a data set into split tables: class folders, the FER2013 CSV, or a CSV manifest.

Images are only listed here (zero-byte files are skipped); decoding happens elsewhere.
"""

from __future__ import annotations

import csv
import math
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import numpy as np

from ferlab.data.affectnet import is_affectnet, read_affectnet
from ferlab.data.classes import CANONICAL_CLASSES, CLASS_SPELLINGS, canonical_order
from ferlab.data.tables import IMAGE_EXTENSIONS, SplitTable, joined_tables
from ferlab.errors import ConfigError, DataError
from ferlab.names import is_utf8, printable

SPLITS = ("train", "val", "test")
EVERY_SPLIT = "all"
"""The one split of data read ``whole``: every sample of every split it has."""

_UNSPLIT = "all"  # name of a table that still has to be split into train/val/test
_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
_FER2013_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
_FER2013_USAGE_LOWER = {usage.lower(): split for usage, split in _FER2013_USAGE.items()}
_FER2013_CODES = {str(code): name for code, name in enumerate(CANONICAL_CLASSES["fer2013"])}
_FER2013_SIDE = 48
_FER2013_PIXELS = _FER2013_SIDE * _FER2013_SIDE
_DIGITS_AND_SPACES = re.compile(r"[0-9 ]*")
_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")
_ACCEPTED_HEADERS = (
    "'emotion,pixels[,Usage]' (FER2013) or 'path,label[,split][,valence][,arousal]' (manifest)"
)


@dataclass
class DatasetSource:
    """A data set read from disk, split into train/val[/test]."""

    root: Path
    kind: str
    """"folders", "affectnet", "fer2013_csv" or "manifest"."""
    splits: dict[str, SplitTable]
    """Always "train" and "val"; "test" when available."""
    classes: list[str]
    """All source class names, canonical order."""
    skipped: list[tuple[str, str]]
    """(file, reason) for files or rows skipped while loading."""
    excluded: dict[str, int] = field(default_factory=dict)
    """Samples left out by a rule of the data set (not errors), counted by reason."""
    vote_columns: list[str] | None = None
    """The columns of the split tables' ``votes`` (classes, then non-class votes such as
    ``unknown``), when a labels file was laid over the data set."""
    label_only_classes: list[str] = field(default_factory=list)
    """Classes that only a labels file's columns name (no class folder of the data set has
    them), such as FER+'s contempt over FER2013's folders."""
    made_splits: tuple[str, ...] = ()
    """The splits drawn here from the data (by ``seed`` and the fractions), not read from it."""
    unmatched_rows: list[tuple[str, str]] = field(default_factory=list)
    """(file:line, reason) for rows of a labels file that name no image of the data set: none
    is lost, as when the data is a part of what the labels cover."""
    on_bad_file: str = "skip"
    """What reading met bad files or rows with: "skip" them or "error"; a labels file laid over
    the data set later does the same with its bad rows."""

    def loading_note(self) -> str | None:
        """One line on what was excluded and skipped while reading, or None if nothing was."""
        parts = []
        if self.excluded:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in self.excluded.items())
            parts.append(f"excluded {sum(self.excluded.values())} ({reasons})")
        if self.skipped:
            where, reason = self.skipped[0]
            parts.append(f"skipped {len(self.skipped)} (first: {where}: {reason})")
        if self.unmatched_rows:
            where, reason = self.unmatched_rows[0]
            parts.append(
                f"{len(self.unmatched_rows)} labels row(s) unused, their image not in the data "
                f"(first: {where}: {reason})"
            )
        if self.label_only_classes:
            parts.append(
                f"classes only the labels file names: {', '.join(self.label_only_classes)}"
            )
        return f"{self.root}: " + "; ".join(parts) if parts else None


class _BadFiles:
    """Records or raises on bad files, per `on_bad_file`."""

    def __init__(self, on_bad_file: str) -> None:
        if on_bad_file not in ("skip", "error"):
            raise ConfigError(f"on_bad_file must be 'skip' or 'error', got '{on_bad_file}'")
        self.raise_errors = on_bad_file == "error"
        self.skipped: list[tuple[str, str]] = []

    def __call__(self, where: str, reason: str) -> None:
        if self.raise_errors:
            raise DataError(f"{where}: {reason}")
        self.skipped.append((where, reason))


def stratified_split(
    labels: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, split) with about `fraction` of each class in `split`.

    Every class with at least 2 samples gets at least one sample on each side; a class with
    one sample stays in `keep`. Deterministic for a seed; both index arrays are sorted.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    split: list[int] = []
    for label in sorted(by_class):
        members = rng.permutation(by_class[label])
        n = len(members)
        k = min(math.floor(n * fraction + 0.5), n - 1)
        if fraction > 0 and n >= 2:
            k = max(k, 1)
        split.extend(members[:k].tolist())
        keep.extend(members[k:].tolist())
    return np.array(sorted(keep), dtype=np.intp), np.array(sorted(split), dtype=np.intp)


def load_dataset(
    path: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    on_bad_file: str = "skip",
    whole: bool = False,
) -> DatasetSource:
    """Read class folders, the AffectNet layout, a FER2013 CSV or a CSV manifest into tables.

    A missing val split is split off train (`val_fraction`); data without any splits is split
    into train/val/test (`val_fraction`, `test_fraction` of the total). Splits are stratified
    and seeded. With `whole`, the data is one split, `all` (``EVERY_SPLIT``): every sample of
    every split it has, none drawn (a tree without train/ is read too). Bad files or rows are
    listed in `skipped` (on_bad_file="skip") or raise a DataError ("error"). A split lacking
    classes that other splits have gives a warning.
    """
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction ({val_fraction}) must be in (0, 1), test_fraction ({test_fraction}) "
            "in [0, 1), and their sum below 1"
        )
    bad = _BadFiles(on_bad_file)
    root = Path(path).expanduser()
    excluded: dict[str, int] = {}
    if root.is_dir():
        if is_affectnet(root):
            kind, (found, excluded) = "affectnet", read_affectnet(root, bad)
        else:
            kind, found = "folders", _read_folders(root, bad, need_train=not whole)
    elif root.is_file() and root.suffix.lower() == ".csv":
        kind, found = _read_csv(root, bad)
    elif root.exists():
        raise DataError(f"{root}: not a folder or a .csv file")
    else:
        raise DataError(f"{root}: no such file or folder")

    if not found:
        raise DataError(f"{root}: no usable samples{_skip_note(bad.skipped)}")
    for table in found.values():
        if not table:
            where = "" if table.name == _UNSPLIT else f" in split '{table.name}'"
            note = f" (excluded: {dict(excluded)})" if excluded else ""
            raise DataError(f"{table.origin}: no samples{where}{note}{_skip_note(bad.skipped)}")
    made: tuple[str, ...] = ()
    if whole:
        tables = [found[name] for name in (_UNSPLIT, *SPLITS) if name in found]
        found = {EVERY_SPLIT: joined_tables(tables, EVERY_SPLIT, f"{root} ({EVERY_SPLIT})")}
    elif _UNSPLIT in found:
        rest = found[_UNSPLIT]
        found = {}
        if test_fraction > 0:
            rest, found["test"] = _split_off(rest, "test", test_fraction, seed)
        found["train"], found["val"] = _split_off(
            rest, "val", val_fraction / (1 - test_fraction), seed + 1
        )
        made = ("train", "val", "test") if test_fraction > 0 else ("train", "val")
    elif "train" not in found:
        raise DataError(f"{root}: no train split; found {', '.join(found)}")
    elif "val" not in found:
        found["train"], found["val"] = _split_off(found["train"], "val", val_fraction, seed)
        made = ("train", "val")

    splits = {name: found[name] for name in (*SPLITS, EVERY_SPLIT) if name in found}
    if not whole:
        _check_classes_in_train(splits)
    classes = canonical_order(label for table in splits.values() for label in table.labels)
    _warn_spellings(root, classes)
    for table in splits.values():
        present = set(table.labels)
        missing = [name for name in classes if name not in present]
        if missing:
            warnings.warn(
                f"{table.origin}: split '{table.name}' has no samples of {', '.join(missing)}",
                stacklevel=2,
            )
    return DatasetSource(
        root=root,
        kind=kind,
        splits=splits,
        classes=classes,
        skipped=bad.skipped,
        excluded=dict(excluded),
        made_splits=made,
        on_bad_file=on_bad_file,
    )


def _warn_spellings(root: Path, classes: list[str]) -> None:
    """A warning for class names that differ only in case or are spellings of one expression
    (``Happy``, ``happiness``, ``happy``): a data set read as written would learn them apart."""
    groups: dict[str, list[str]] = {}
    for name in classes:
        lowered = name.lower()
        groups.setdefault(CLASS_SPELLINGS.get(lowered, lowered), []).append(name)
    alike = {key: names for key, names in groups.items() if len(names) > 1}
    if alike:
        merges = ";".join(f"{key}={'+'.join(names)}" for key, names in alike.items())
        shown = "; ".join(", ".join(names) for names in alike.values())
        warnings.warn(
            f"{root}: classes that look like one: {shown}; they are learned apart unless merged "
            f"(--merge '{merges}')",
            stacklevel=3,
        )


def _check_classes_in_train(splits: dict[str, SplitTable]) -> None:
    """A class that only val or test has could never be predicted: refuse such data."""
    trained = set(splits["train"].labels)
    for table in splits.values():
        unknown = sorted(set(table.labels) - trained)
        if unknown:
            raise DataError(
                f"{table.origin}: split '{table.name}' has classes that train has not: "
                f"{_names(unknown)} (train: {_names(sorted(trained))}); "
                "use the same class names in every split"
            )


def _names(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _skip_note(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    where, reason = skipped[0]
    return f" ({len(skipped)} skipped, first: {where}: {reason})"


def _split_off(
    table: SplitTable, name: str, fraction: float, seed: int
) -> tuple[SplitTable, SplitTable]:
    """Stratified split of `table` into (train, `name`)."""
    keep, part = stratified_split(table.labels, fraction, seed)
    if len(part) == 0:
        raise DataError(
            f"{table.origin}: too few samples ({len(table)}) to split off a '{name}' split"
        )
    return replace(table.subset(keep), name="train"), replace(table.subset(part), name=name)


# --- class folders -------------------------------------------------------------------------


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    """Visible entries of a folder, sorted by name."""
    try:
        with os.scandir(folder) as it:
            entries = [entry for entry in it if not entry.name.startswith(".")]
    except OSError as exc:
        raise DataError(f"{folder}: cannot read folder ({exc.strerror})") from None
    return sorted(entries, key=lambda entry: entry.name)


def _is_image(entry: os.DirEntry[str]) -> bool:
    return os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file()


class _Ignored:
    """What a folder tree holds that is not read: files that are not images by name (by
    extension), class folders without images, folders beside the splits."""

    def __init__(self) -> None:
        self.extensions: Counter[str] = Counter()
        self.not_files: list[str] = []
        self.empty_classes: list[str] = []
        self.folders: list[str] = []

    def warning(self, root: Path) -> str | None:
        parts = []
        if self.extensions:
            kinds = ", ".join(f"{ext} {n}" for ext, n in self.extensions.most_common())
            parts.append(
                f"{sum(self.extensions.values())} file(s) that are not images by name ({kinds}; "
                f"read: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        if self.not_files:
            first = printable(self.not_files[0])
            parts.append(f"{len(self.not_files)} image name(s) that are no file (first: {first})")
        if self.empty_classes:
            parts.append(f"class folder(s) without images: {', '.join(self.empty_classes)}")
        if self.folders:
            parts.append(
                f"folder(s) beside the splits: {', '.join(self.folders)} (splits are "
                f"{', '.join(sorted(set(_SPLIT_NAMES)))})"
            )
        return f"{root}: left out " + "; ".join(parts) if parts else None


def _images_below(folder: Path, seen: set[str], ignored: _Ignored) -> Iterator[os.DirEntry[str]]:
    """Image files in ``folder`` and its visible subfolders, depth first by name (as
    torchvision's ImageFolder reads a class folder); a folder reached twice through links is
    read once. Other files are counted in ``ignored``."""
    real = os.path.realpath(folder)
    if real in seen:
        return
    seen.add(real)
    for entry in _scandir(folder):
        if entry.is_dir():
            yield from _images_below(Path(entry.path), seen, ignored)
        elif _is_image(entry):
            yield entry
        else:
            extension = os.path.splitext(entry.name)[1].lower()
            if extension in IMAGE_EXTENSIONS:  # an image's name that is no file: a dead link
                ignored.not_files.append(entry.path)
            else:
                ignored.extensions[extension or "no extension"] += 1


def _read_class_folders(folder: Path, name: str, bad: _BadFiles, ignored: _Ignored) -> SplitTable:
    """Images in `folder/<class>/`, subfolders included; other files are counted in
    ``ignored``."""
    labels: list[str] = []
    paths: list[Path] = []
    for entry in _scandir(folder):
        if entry.is_dir():
            if not is_utf8(entry.name):
                raise DataError(
                    f"{printable(entry.path)}: a class folder whose name is not UTF-8; rename "
                    "it (class names go into model files and reports as text)"
                )
            found = len(paths)
            for file in _images_below(Path(entry.path), set(), ignored):
                if file.stat().st_size == 0:
                    bad(file.path, "empty file")
                else:
                    labels.append(entry.name)
                    paths.append(Path(file.path))
            if len(paths) == found:
                where = entry.name if name == _UNSPLIT else f"{name}/{entry.name}"
                ignored.empty_classes.append(f"{where}/")
        elif _is_image(entry):
            bad(entry.path, "image outside a class folder")
    return SplitTable(name, labels, paths, None, None, None, origin=str(folder))


def _read_folders(root: Path, bad: _BadFiles, need_train: bool = True) -> dict[str, SplitTable]:
    entries = _scandir(root)
    if not entries:
        raise DataError(f"{root}: folder is empty")
    ignored = _Ignored()
    found = _read_split_folders(root, entries, bad, ignored, need_train)
    note = ignored.warning(root)
    if note is not None:
        warnings.warn(note, stacklevel=3)
    return found


def _read_split_folders(
    root: Path,
    entries: list[os.DirEntry[str]],
    bad: _BadFiles,
    ignored: _Ignored,
    need_train: bool = True,
) -> dict[str, SplitTable]:
    split_dirs: dict[str, Path] = {}
    for entry in entries:
        split = _SPLIT_NAMES.get(entry.name.lower())
        if split and entry.is_dir():
            if split in split_dirs:
                raise DataError(
                    f"{root}: both {split_dirs[split].name}/ and {entry.name}/ "
                    f"look like the {split} split"
                )
            split_dirs[split] = Path(entry.path)
    if not split_dirs:
        table = _read_class_folders(root, _UNSPLIT, bad, ignored)
        if not table:
            raise DataError(
                f"{root}: no images found; expected <class>/<image> or train/<class>/<image>"
                f"{_skip_note(bad.skipped)}"
            )
        return {_UNSPLIT: table}
    if need_train and "train" not in split_dirs:
        found = ", ".join(f"{folder.name}/" for folder in split_dirs.values())
        raise DataError(f"{root}: has {found} but no train/ folder")
    ignored.folders = [
        f"{entry.name}/"
        for entry in entries
        if entry.is_dir() and entry.path not in {str(folder) for folder in split_dirs.values()}
    ]
    return {
        split: _read_class_folders(folder, split, bad, ignored)
        for split, folder in split_dirs.items()
    }


# --- CSV files -----------------------------------------------------------------------------


def _header_matches(columns: list[str], required: set[str], optional: set[str]) -> bool:
    names = set(columns)
    return len(names) == len(columns) and required <= names <= required | optional


class _CsvLines:
    """Rows of a CSV file read one line at a time, ``line_num`` the line of the last: FER2013
    pixels and manifest paths hold no line break, so a stray quote spoils its own row only
    (``problem`` says how) instead of joining the rows after it into one field."""

    def __init__(self, file: TextIO) -> None:
        self.lines = iter(file)
        self.line_num = 0
        self.problem: str | None = None

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> list[str]:
        line = next(self.lines)
        self.line_num += 1
        self.problem = None
        try:
            return next(csv.reader([line], strict=True), [])
        except csv.Error as exc:
            unclosed = str(exc) == "unexpected end of data"
            self.problem = "unclosed quote" if unclosed else f"bad quoting ({exc})"
            return next(csv.reader([line]), [])


def _read_csv(path: Path, bad: _BadFiles) -> tuple[str, dict[str, SplitTable]]:
    """Dispatch on the header: FER2013 CSV or manifest."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = _CsvLines(file)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty CSV file; expected a header {_ACCEPTED_HEADERS}")
            columns = [column.strip().lower() for column in header]
            if _header_matches(columns, {"emotion", "pixels"}, {"usage"}):
                return "fer2013_csv", _read_fer2013(path, reader, columns, bad)
            if _header_matches(columns, {"path", "label"}, {"split", "valence", "arousal"}):
                return "manifest", _read_manifest(path, reader, columns, bad)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise DataError(f"{path}:line {reader.line_num}: {exc}") from None
    shown = ",".join(header)
    shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
    hint = next(
        (f" (fields separated by '{sep}'? ferlab reads commas)" for sep in ";\t|" if sep in shown),
        "",
    )
    raise DataError(f"{path}: unexpected CSV header '{shown}'{hint}; accepted: {_ACCEPTED_HEADERS}")


def _rows(
    path: Path, reader: _CsvLines, columns: list[str], bad: _BadFiles
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (location, {column: stripped cell}) for non-blank rows with the right field count."""
    for row in reader:
        if not row:
            continue
        where = f"{path}:line {reader.line_num}"
        if reader.problem is not None:
            bad(where, reader.problem)
            continue
        if len(row) != len(columns):
            bad(where, f"{len(row)} fields, expected {len(columns)}")
            continue
        yield where, {column: cell.strip() for column, cell in zip(columns, row, strict=True)}


def _group(table: SplitTable, splits: list[str] | None) -> dict[str, SplitTable]:
    """Tables per split name, or the whole table as unsplit when `splits` is None."""
    if splits is None:
        return {_UNSPLIT: table}
    grouped = {}
    for name in SPLITS:
        indices = [i for i, split in enumerate(splits) if split == name]
        if indices:
            grouped[name] = replace(table.subset(indices), name=name)
    return grouped


def _parse_pixels(text: str) -> tuple[np.ndarray | None, str]:
    """(48x48 uint8 image, "") or (None, reason); values are ASCII digits split by whitespace,
    quoted as written in a reason."""
    if _DIGITS_AND_SPACES.fullmatch(text):
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    else:
        tokens = text.split()
        wrong = next((token for token in tokens if not _ASCII_INTEGER.fullmatch(token)), None)
        if wrong is not None:
            return None, f"non-integer pixel value '{wrong}'"
        values = np.array([float(token) for token in tokens], dtype=np.float64)
    if values.size != _FER2013_PIXELS:
        return None, f"{values.size} pixel values, expected {_FER2013_PIXELS}"
    out_of_range = np.flatnonzero((values < 0) | (values > 255))
    if out_of_range.size:
        return None, f"pixel value {text.split()[out_of_range[0]]} outside 0-255"
    return values.astype(np.uint8).reshape(_FER2013_SIDE, _FER2013_SIDE), ""


def _read_fer2013(
    path: Path, reader: _CsvLines, columns: list[str], bad: _BadFiles
) -> dict[str, SplitTable]:
    labels: list[str] = []
    images: list[np.ndarray] = []
    splits: list[str] = []
    for where, row in _rows(path, reader, columns, bad):
        label = _FER2013_CODES.get(row["emotion"].removesuffix(".0"))
        if label is None:
            bad(where, f"emotion code '{row['emotion']}' not in 0-{len(_FER2013_CODES) - 1}")
            continue
        split = _FER2013_USAGE_LOWER.get(row.get("usage", "Training").lower())
        if split is None:
            bad(where, f"Usage '{row['usage']}' is not one of {', '.join(_FER2013_USAGE)}")
            continue
        image, reason = _parse_pixels(row["pixels"])
        if image is None:
            bad(where, reason)
            continue
        labels.append(label)
        images.append(image)
        splits.append(split)
    pixels = np.stack(images) if images else np.zeros((0, _FER2013_SIDE, _FER2013_SIDE), np.uint8)
    table = SplitTable(_UNSPLIT, labels, None, pixels, None, None, origin=str(path))
    return _group(table, splits if "usage" in columns else None)


def _read_manifest(
    path: Path, reader: _CsvLines, columns: list[str], bad: _BadFiles
) -> dict[str, SplitTable]:
    labels: list[str] = []
    paths: list[Path] = []
    splits: list[str] = []
    dims = [name for name in ("valence", "arousal") if name in columns]
    values: dict[str, list[float]] = {name: [] for name in dims}
    listed: dict[tuple[int, int], int] = {}
    for where, row in _rows(path, reader, columns, bad):
        if not row["path"] or not row["label"]:
            bad(where, "empty path or label")
            continue
        split = _SPLIT_NAMES.get(row.get("split", "train").lower())
        if split is None:
            bad(where, f"split '{row['split']}' is not train, val or test")
            continue
        try:
            floats = {name: float(row[name]) if row[name] else math.nan for name in dims}
        except ValueError:
            bad(where, "valence/arousal is not a number: " + ", ".join(row[n] for n in dims))
            continue
        outside = [f"{name} {value:g}" for name, value in floats.items() if abs(value) > 1]
        if outside:
            bad(where, f"{', '.join(outside)} outside [-1, 1] (rescale a rating scale to it)")
            continue
        image = path.parent / row["path"]  # an absolute path replaces the CSV's folder
        try:
            info = image.stat()
        except OSError:
            bad(str(image), "file not found")
            continue
        if not stat.S_ISREG(info.st_mode):
            bad(str(image), "not a file")
            continue
        if info.st_size == 0:
            bad(str(image), "empty file")
            continue
        key = (info.st_dev, info.st_ino)  # one file however the rows spell it (links too)
        if key in listed:
            bad(where, f"second row for {row['path']} (first: line {listed[key]})")
            continue
        listed[key] = reader.line_num
        labels.append(row["label"])
        paths.append(image)
        splits.append(split)
        for name in dims:
            values[name].append(floats[name])

    def column(name: str) -> np.ndarray | None:
        return np.array(values[name], dtype=np.float32) if name in values else None

    table = SplitTable(
        _UNSPLIT, labels, paths, None, column("valence"), column("arousal"), origin=str(path)
    )
    return _group(table, splits if "split" in columns else None)
