"""Convert between the FER2013 CSV and class folders, never leaving a half-written output.

The output is written to a temporary sibling of DST and renamed into place at the end.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ferlab.data.cache import decode_file
from ferlab.data.classes import CANONICAL_CLASSES, CLASS_SPELLINGS
from ferlab.data.sources import DatasetSource, load_dataset
from ferlab.data.tables import unreadable_reason
from ferlab.errors import DataError, OutputError, os_error_line
from ferlab.outputs import check_outside_data, check_writable
from ferlab.progress import track

FER2013_SIDE = 48
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FER2013_CLASSES = CANONICAL_CLASSES["fer2013"]
_PIXEL_TEXT = [str(value) for value in range(256)]


@dataclass
class Conversion:
    """What `convert_dataset` wrote."""

    dst: Path
    direction: str
    """"csv->folders" or "folders->csv"."""
    counts: dict[str, int]
    """Samples written per split."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) for inputs left out."""
    made_splits: tuple[str, ...] = ()
    """The splits drawn at random from the source (it lacked them), not read from it."""

    @property
    def val_from_train(self) -> bool:
        """True when the source had no val split and one was split off train."""
        return self.made_splits == ("train", "val")

    def split_note(self) -> str | None:
        """One line on which splits were drawn at random rather than read, or None."""
        if not self.made_splits:
            return None
        if self.val_from_train:
            return "no val split in the source; val was split off train at random"
        drawn = " and ".join(name for name in self.made_splits if name != "train")
        return f"no splits in the source; {drawn} were drawn from it at random, train is the rest"


def fer2013_class(name: str) -> str | None:
    """The FER2013 class a folder name stands for (case-insensitive, aliases), or None."""
    lowered = name.strip().lower()
    lowered = CLASS_SPELLINGS.get(lowered, lowered)
    return lowered if lowered in FER2013_CLASSES else None


def _temporary(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.tmp-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_replaceable(dst: Path, to_folders: bool) -> None:
    """Refuse to replace ``dst`` unless it looks like an earlier output of this conversion: a
    file (for a CSV), or a folder holding nothing but ``<split>/<class>/<Usage>_<row>.png``
    files (for class folders), so that --exist-ok never deletes a data set of the user's."""
    if not to_folders:
        if dst.is_dir() and not dst.is_symlink():
            raise DataError(f"{dst}: is a folder; --exist-ok replaces only a CSV file here")
        return
    if not dst.is_dir() or dst.is_symlink():
        raise DataError(f"{dst}: not a folder; --exist-ok replaces only an earlier output folder")
    foreign = _foreign_files(dst)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DataError(
            f"{dst}: holds files 'ferlab data convert' does not write ({shown}); "
            "--exist-ok replaces only an earlier output: move them or choose another destination"
        )


def _foreign_files(dst: Path) -> list[str]:
    """Entries below ``dst`` (relative paths) that converting a FER2013 CSV does not write."""
    foreign = []
    for split in sorted(dst.iterdir()):
        if split.name not in USAGE or not split.is_dir() or split.is_symlink():
            foreign.append(split.name)
            continue
        written = re.compile(rf"{USAGE[split.name]}_\d+\.png")
        for folder in sorted(split.iterdir()):
            if folder.name not in FER2013_CLASSES or not folder.is_dir() or folder.is_symlink():
                foreign.append(f"{split.name}/{folder.name}")
                continue
            foreign += [
                f"{split.name}/{folder.name}/{file.name}"
                for file in sorted(folder.iterdir())
                if not written.fullmatch(file.name) or not file.is_file() or file.is_symlink()
            ]
    return foreign


def _write_folders(source: DatasetSource, out: Path) -> dict[str, int]:
    """DST/<split>/<class>/<Usage>_<row>.png, row = index within the split."""
    counts = {}
    for split, table in source.splits.items():
        assert table.pixels is not None
        width = max(5, len(str(len(table))))
        for name in source.classes:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        rows = zip(table.labels, table.pixels, strict=True)
        for row, (label, pixels) in enumerate(track(rows, f"convert {split}", len(table))):
            Image.fromarray(pixels).save(
                out / split / label / f"{USAGE[split]}_{row:0{width}d}.png"
            )
        counts[split] = len(table)
    return counts


def _gray48(path: Path) -> np.ndarray:
    """An image file as 48x48 gray pixels (stretched if not square), decoded as training
    decodes it."""
    return decode_file(path, FER2013_SIDE, "L")[0]


def _write_csv(source: DatasetSource, out: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """emotion,pixels,Usage rows: splits in train/val/test order, then by file name."""
    mapped = {name: fer2013_class(name) for name in source.classes}
    unknown = sorted(name for name, fer in mapped.items() if fer is None)
    if unknown:
        raise DataError(
            f"{source.root}: classes not in FER2013 ({', '.join(FER2013_CLASSES)}): "
            f"{', '.join(unknown)}"
        )
    codes = {name: FER2013_CLASSES.index(fer) for name, fer in mapped.items() if fer}
    counts: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    with out.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["emotion", "pixels", "Usage"])
        for split, table in source.splits.items():
            assert table.paths is not None
            rows = sorted(
                zip(table.paths, table.labels, strict=True), key=lambda r: (r[0].name, r[1])
            )
            counts[split] = 0
            for path, label in track(rows, f"convert {split}", unit="images"):
                try:
                    pixels = _gray48(path)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    skipped.append((str(path), unreadable_reason(exc, path)))
                    continue
                text = " ".join([_PIXEL_TEXT[v] for v in pixels.ravel().tolist()])
                writer.writerow([codes[label], text, USAGE[split]])
                counts[split] += 1
    return counts, skipped


def convert_dataset(src: str | Path, dst: str | Path, *, force: bool = False) -> Conversion:
    """FER2013 CSV -> class folders at `dst`, or class folders (or a manifest) -> FER2013 CSV.

    A missing val split is split off train, as for training. Refuses an existing `dst` unless
    `force`; the old `dst` is replaced only once the new one is complete.
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    dst = Path(os.path.abspath(dst)) if not dst.name else dst
    if dst.resolve() == src.resolve():
        raise DataError(f"{dst}: is the source itself")
    if dst.resolve() in src.resolve().parents:
        raise DataError(f"{dst}: holds the source {src}; choose a destination outside it")
    check_outside_data(dst, src)
    if dst.exists() and not force:
        raise DataError(f"{dst}: already exists (give --exist-ok to replace it)")
    if not dst.parent.is_dir():
        raise DataError(f"{dst.parent}: no such folder")
    check_writable(dst.parent)
    source = load_dataset(src)
    to_folders = source.kind == "fer2013_csv"
    if to_folders and dst.suffix.lower() == ".csv":
        raise DataError(f"{dst}: source is already a FER2013 CSV; the destination must be a folder")
    if not to_folders and dst.suffix.lower() != ".csv":
        raise DataError(f"{dst}: converting {source.kind} to FER2013 needs a .csv destination")
    if dst.exists() or dst.is_symlink():
        _check_replaceable(dst, to_folders)
    partial = _temporary(dst)
    _remove(partial)
    skipped = list(source.skipped)
    try:
        if to_folders:
            partial.mkdir()
            counts = _write_folders(source, partial)
        else:
            counts, bad = _write_csv(source, partial)
            skipped += bad
        if dst.exists() or dst.is_symlink():
            _remove(dst)
        os.replace(partial, dst)
    except OSError as exc:
        _remove(partial)
        raise OutputError(os_error_line(exc, dst)) from None
    except BaseException:
        _remove(partial)
        raise
    return Conversion(
        dst=dst,
        direction="csv->folders" if to_folders else "folders->csv",
        counts=counts,
        skipped=skipped,
        made_splits=source.made_splits,
    )
