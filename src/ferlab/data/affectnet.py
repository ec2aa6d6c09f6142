"""The AffectNet layout: ``images/<id>.jpg`` with ``annotations/<id>_{exp,val,aro}.npy``.

Either one such folder pair at the root (split three ways like any unsplit data) or one under
``train_set/`` and ``val_set/``. Each annotation holds one value, as a 0-d array of a string in
the release (``'1'``, ``'0.4526'``) or of a number. Expression codes 0-7 are the classes of
``CANONICAL_CLASSES["affectnet"]``; other codes (8 none, 9 uncertain, 10 no face) and valence or
arousal -2 (uncertain, no face) are excluded by rule and counted. Missing or malformed annotations
are bad files (skipped and listed, or an error). Landmark files (``<id>_lnd.npy``) are not read.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ferlab.data.classes import CANONICAL_CLASSES
from ferlab.data.tables import IMAGE_EXTENSIONS, SplitTable
from ferlab.errors import DataError

SPLIT_FOLDERS = {"train_set": "train", "val_set": "val"}
CLASSES = CANONICAL_CLASSES["affectnet"]
UNCERTAIN = -2.0
EXCLUDED_CLASS = "expression code outside 0-7"
EXCLUDED_VA = "valence or arousal -2 (uncertain or no face)"
_LAYOUT = "AffectNet layout: images/<id>.jpg and annotations/<id>_exp.npy, _val.npy, _aro.npy"
_NPY_MAGIC = b"\x93NUMPY"
_NPZ_MAGIC = b"PK\x03\x04"

BadFile = Callable[[str, str], None]


class AnnotationError(ValueError):
    """An annotation file that cannot be read as one number; the message says why."""


def is_affectnet(root: Path) -> bool:
    """Whether ``root`` looks like the AffectNet layout rather than class folders."""
    try:
        with os.scandir(root) as it:
            folders = {entry.name for entry in it if entry.is_dir()}
    except OSError:
        return False  # the class-folder reader reports the unreadable folder
    return bool(folders & {"annotations", *SPLIT_FOLDERS}) or folders == {"images"}


def read_annotation(path: Path) -> float:
    """The single value in an ``.npy`` file: a number, or a string that holds one."""
    try:
        with path.open("rb") as file:
            start = file.read(8)
        npy = start.startswith((_NPY_MAGIC, _NPZ_MAGIC))
        array = np.load(path, allow_pickle=False) if npy else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "allow_pickle" in first:  # numpy's advice to load it unsafely
            first = "it holds Python objects, which ferlab does not load"
        raise AnnotationError(f"not a readable .npy array ({first})") from None
    if array is None:
        shown = f"it starts with {start!r}" if start else "an empty file"
        raise AnnotationError(f"not a readable .npy array (not a NumPy .npy file: {shown})")
    if not isinstance(array, np.ndarray):
        array.close()
        raise AnnotationError("an .npz archive, expected one .npy array")
    if array.shape not in ((), (1,)):
        raise AnnotationError(f"array of shape {array.shape}, expected one value")
    value = array.reshape(()).item()
    if array.dtype.kind in "US":
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            return float(text)
        except ValueError:
            raise AnnotationError(f"string '{text}' is not a number") from None
    if array.dtype.kind not in "iuf":
        raise AnnotationError(f"dtype {array.dtype}, expected a number or a numeric string")
    return float(value)


def read_affectnet(root: Path, bad: BadFile) -> tuple[dict[str, SplitTable], dict[str, int]]:
    """Split tables (``"all"`` for a root without split folders) and the excluded counts."""
    folders = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    excluded: Counter[str] = Counter()
    if folders:
        tables = {
            SPLIT_FOLDERS[name]: _read_folder(root / name, SPLIT_FOLDERS[name], bad, excluded)
            for name in folders
        }
    else:
        tables = {"all": _read_folder(root, "all", bad, excluded)}
    return tables, {
        reason: excluded[reason] for reason in (EXCLUDED_CLASS, EXCLUDED_VA) if excluded[reason]
    }


def _listing(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{folder}: cannot read folder ({exc.strerror})") from None


def _read_folder(folder: Path, name: str, bad: BadFile, excluded: Counter[str]) -> SplitTable:
    images, annotations = folder / "images", folder / "annotations"
    for needed in (images, annotations):
        if not needed.is_dir():
            raise DataError(f"{folder}: no {needed.name}/ folder ({_LAYOUT})")
    present = {entry.name for entry in _listing(annotations)}
    labels: list[str] = []
    paths: list[Path] = []
    values: list[tuple[float, float]] = []
    for entry in _listing(images):
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS or not entry.is_file():
            continue
        stem = os.path.splitext(entry.name)[0]
        files = [f"{stem}_{kind}.npy" for kind in ("exp", "val", "aro")]
        missing = [file for file in files if file not in present]
        if missing:
            bad(entry.path, f"missing annotation {', '.join(missing)}")
            continue
        if entry.stat().st_size == 0:
            bad(entry.path, "empty file")
            continue
        try:
            code, valence, arousal = _read_triplet([annotations / file for file in files])
        except _BadAnnotation as exc:
            bad(str(exc.path), exc.reason)
            continue
        if code not in range(len(CLASSES)):
            excluded[EXCLUDED_CLASS] += 1
        elif UNCERTAIN in (valence, arousal):
            excluded[EXCLUDED_VA] += 1
        else:
            labels.append(CLASSES[int(code)])
            paths.append(Path(entry.path))
            values.append((valence, arousal))
    va = np.array(values, dtype=np.float32).reshape(-1, 2)
    return SplitTable(name, labels, paths, None, va[:, 0], va[:, 1], origin=str(images))


class _BadAnnotation(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _read_triplet(files: list[Path]) -> tuple[float, float, float]:
    """Expression code, valence and arousal from their three files, checked for range."""
    values = []
    for file in files:
        try:
            values.append(read_annotation(file))
        except AnnotationError as exc:
            raise _BadAnnotation(file, str(exc)) from None
    code, valence, arousal = values
    if not code.is_integer():
        raise _BadAnnotation(files[0], f"expression code {code} is not an integer")
    for file, dimension, value in zip(files[1:], ("valence", "arousal"), values[1:], strict=True):
        if value != UNCERTAIN and not -1 <= value <= 1:
            raise _BadAnnotation(file, f"{dimension} {value} outside [-1, 1]")
    return code, valence, arousal
