"""Output folders checked writable before long work starts; files written whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ferlab.errors import OutputError, os_error_line


def check_writable(folder: str | Path) -> None:
    """Raise OutputError unless files can be created in ``folder``, or in the folder it would be
    made in; nothing is left behind (a missing folder is not created)."""
    target = Path(folder).expanduser()
    existing = target
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            raise OutputError(f"{existing}: a broken link, not a folder")
        existing = existing.parent
    tail = "" if existing == target else f", so {target} cannot be made"
    if not existing.is_dir():
        raise OutputError(f"{existing}: not a folder{tail}")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".ferlab-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        problem = (exc.strerror or type(exc).__name__).lower()
        raise OutputError(f"{existing}: cannot write to this folder ({problem}){tail}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (its folder made if missing) through a hidden partial file
    renamed into place; on a failure (a full or read-only disk) the partial file is removed and
    OutputError names the file."""
    partial = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(os_error_line(exc, path)) from None


def numbered(path: Path, *, file: bool = False) -> Path:
    """``path`` when nothing is there, else the first free ``<path>-2``, ``<path>-3``, ...
    (for a ``file``, the number goes before its suffix: ``model-2.onnx``)."""
    stem, suffix = (path.stem, path.suffix) if file else (path.name, "")
    candidate, number = path, 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{stem}-{number}{suffix}")
    return candidate


def check_new(paths: Iterable[Path], exist_ok: bool, flag: str = "--exist-ok") -> None:
    """Raise OutputError naming the first of ``paths`` that exists, unless ``exist_ok``: no
    command writes over an earlier output unless told to."""
    if exist_ok:
        return
    for path in paths:
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path}: already exists; give {flag} to write over it")


def check_suffix(out: Path, suffix: str, what: str) -> None:
    """Raise OutputError unless ``out`` is a file name ending in ``suffix`` (the file it names
    is ``what``): a misnamed file would fail wherever its suffix is trusted."""
    if out.suffix.lower() != suffix or not out.stem:
        raise OutputError(f"{out}: --out must be a file name ending in {suffix} ({what})")
    if out.is_dir():
        raise OutputError(f"{out}: a folder; --out names the {suffix} file to write")


def check_not_input(out: Path, inputs: Collection[Path]) -> None:
    """Raise OutputError when ``out`` is one of ``inputs`` (resolved paths): not even
    ``--exist-ok`` lets a command write over what it reads."""
    if out.resolve() in inputs:
        raise OutputError(f"{out}: this is one of the inputs; choose another output")


def check_outside_data(out: Path, data: str | Path) -> None:
    """Raise OutputError when ``out`` is the data folder ``data`` or lies inside it: a report or
    a run written there would become part of the data set (a ``plots`` class, stray files)."""
    root = Path(data).expanduser()
    if not root.is_dir():
        return
    target, root = out.expanduser().resolve(), root.resolve()
    if target == root or root in target.parents:
        raise OutputError(
            f"{out}: inside the data folder {data}; write outside it, where the outputs cannot "
            "become part of the data"
        )


@contextmanager
def staged_folder(out_dir: Path, *, last: Collection[str] = ()) -> Iterator[Path]:
    """A hidden folder to write ``out_dir``'s outputs in, moved into place when the block ends
    and removed when it fails: ``out_dir`` gets the whole set or nothing new, and earlier
    outputs there stay whole until the new set is complete (entries named in ``last`` are
    moved in last). A killed run's stage is cleared by the next."""
    fresh = not out_dir.exists()
    stage = out_dir.with_name(f".{out_dir.name}.partial") if fresh else out_dir / ".partial"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        yield stage
        if fresh:
            os.replace(stage, out_dir)
        else:
            for entry in sorted(os.listdir(stage), key=lambda name: name in last):
                _replace(stage / entry, out_dir / entry, stage / f".old-{entry}")
    except OutputError as exc:  # named as the file it was to become
        raise OutputError(str(exc).replace(str(stage), str(out_dir))) from None
    except OSError as exc:
        raise OutputError(os_error_line(exc, out_dir)) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _replace(new: Path, target: Path, aside: Path) -> None:
    """Move ``new`` to ``target``; a folder at ``target`` is first moved ``aside``."""
    if target.is_dir() and not target.is_symlink():
        os.replace(target, aside)
    os.replace(new, target)
