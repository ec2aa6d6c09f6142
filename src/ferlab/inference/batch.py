"""Many image files through a recognizer: find them, decode in chunks, keep going past bad ones."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.data.tables import IMAGE_EXTENSIONS
from ferlab.errors import DataError
from ferlab.inference.image_results import ImageResult
from ferlab.inference.images import load_image
from ferlab.inference.recognizer import Recognizer

_CHUNK_PIXELS = 64_000_000  # decoded images held at once, at most (plus one)


@dataclass
class ImageFile:
    """A file to predict on; ``name`` is its path below the folder it was found in."""

    path: Path
    name: Path


@dataclass
class FileOutcome:
    """The result of a file and its decoded RGB pixels, or why it could not be read."""

    file: ImageFile
    result: ImageResult | None = None
    image: np.ndarray | None = None
    error: str | None = None


def find_images(sources: Sequence[str]) -> tuple[list[ImageFile], list[str]]:
    """Files named, image files below folders (recursively) and glob matches, sorted per source;
    and one message for each source that gave nothing."""
    problems: list[str] = []
    return list(iter_images(sources, problems)), problems


def iter_images(sources: Iterable[str], problems: list[str]) -> Iterator[ImageFile]:
    """``find_images`` lazily: folders are walked one directory at a time, in sorted path order,
    and a message for each source that gave nothing is appended to ``problems``."""
    sources = list(sources)
    repeated = _repeated_sources(sources)
    for index, source in enumerate(sources):
        path = Path(source)
        if index in repeated:
            warnings.warn(f"{source}: {repeated[index]}, so its images are read once", stacklevel=2)
        elif path.is_dir():
            found = False
            for file in _walk_images(path, problems):
                found = True
                yield ImageFile(file, file.relative_to(path))
            if not found:
                problems.append(f"{path}: no image files in this folder")
        elif path.exists():
            yield ImageFile(path, Path(path.name))
        elif glob.has_magic(source):
            yield from _glob_images(source, problems)
        elif path.is_symlink():
            problems.append(f"{source}: a symbolic link to nothing (or a loop of links)")
        else:
            problems.append(f"{source}: no such file or folder")


def _repeated_sources(sources: Sequence[str]) -> dict[int, str]:
    """The index of each named file or folder (not a glob) that an earlier one names again or a
    folder among ``sources`` holds, with where its images come from instead."""
    resolved = [
        None if glob.has_magic(source) or not os.path.exists(source) else Path(source).resolve()
        for source in sources
    ]
    folders = [
        (index, path) for index, path in enumerate(resolved) if path is not None and path.is_dir()
    ]
    repeated = {}
    for index, path in enumerate(resolved):
        if path is None:
            continue
        earlier = next((i for i in range(index) if resolved[i] == path), None)
        if earlier is not None:
            repeated[index] = f"given again (as {sources[earlier]})"
            continue
        if not (path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS):
            continue  # a folder's walk would not read it
        holders = [(len(folder.parts), i) for i, folder in folders if path.is_relative_to(folder)]
        outermost = min(holders, default=None)
        if outermost is not None and resolved[outermost[1]] != path:
            repeated[index] = f"inside {sources[outermost[1]]}, which is given too"
    return repeated


def _glob_images(pattern: str, problems: list[str]) -> Iterator[ImageFile]:
    """The files a glob matches, and the image files below the folders it matches (named with
    the folder), in sorted order."""
    found = False
    for match in sorted(Path(p) for p in glob.glob(pattern, recursive=True)):
        if match.is_dir():
            for file in _walk_images(match, problems):
                found = True
                yield ImageFile(file, file.relative_to(match.parent))
        elif match.is_file():
            found = True
            yield ImageFile(match, Path(match.name))
    if not found:
        problems.append(f"{pattern}: no file or image below a folder matches this pattern")


def _walk_images(folder: Path, problems: list[str]) -> Iterator[Path]:
    """Image files below ``folder``, each folder's entries in name order; symbolic links to
    folders are not followed, and a folder that cannot be read adds a message to ``problems``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda entry: entry.name)
    except OSError as exc:
        problems.append(f"{folder}: cannot read folder ({(exc.strerror or '').lower()})")
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_images(Path(entry.path), problems)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            try:
                is_file = entry.is_file()
            except OSError as exc:
                problems.append(f"{entry.path}: {(exc.strerror or type(exc).__name__).lower()}")
                continue
            if is_file:
                yield Path(entry.path)
            elif entry.is_symlink() and not os.path.exists(entry.path):
                problems.append(f"{entry.path}: a symbolic link to nothing")


class OutputNames:
    """Output paths in ``folder`` named like the inputs (as ``written`` turns a name into the
    one that is written, e.g. with an extension added): a name given before, or of a file that
    exists (an input, an earlier output), gets ``-2``, ``-3``, ... before the extension."""

    def __init__(self, folder: Path, written: Callable[[Path], Path] = lambda name: name) -> None:
        self.folder = folder
        self.written = written
        self.taken: set[Path] = set()
        self.renamed: list[tuple[Path, Path]] = []
        """(the name wanted, the path given) for each output that got a number."""

    def __call__(self, file: ImageFile) -> Path:
        name = self.written(file.name)
        out, number = self.folder / name, 1
        while out in self.taken or out.exists():
            number += 1
            out = self.folder / name.with_name(f"{name.stem}-{number}{name.suffix}")
        self.taken.add(out)
        if number > 1:
            self.renamed.append((file.name, out))
        return out

    def renamed_note(self, shown: int = 3) -> str | None:
        """One line on the outputs that got a number, or None if none did."""
        if not self.renamed:
            return None
        pairs = [f"{wanted.as_posix()} as {got.name}" for wanted, got in self.renamed[:shown]]
        more = len(self.renamed) - shown
        return (
            f"{len(self.renamed)} annotated image(s) numbered, as {self.folder} held the name: "
            + ", ".join(pairs)
            + (f" and {more} more" if more > 0 else "")
        )


def predict_files(
    recognizer: Recognizer, files: Iterable[ImageFile], *, batch_size: int = 64
) -> Iterator[FileOutcome]:
    """One outcome per file, in order; files are decoded in chunks of at most ``batch_size`` files
    and about 64 MP, whose faces share model batches."""
    chunk: list[FileOutcome] = []
    pixels = 0
    for file in files:
        try:
            image = load_image(file.path)
        except DataError as exc:
            chunk.append(FileOutcome(file, error=str(exc)))
        else:
            chunk.append(FileOutcome(file, image=image))
            pixels += image.shape[0] * image.shape[1]
        if len(chunk) >= batch_size or pixels >= _CHUNK_PIXELS:
            yield from _predict_chunk(recognizer, chunk, batch_size)
            chunk, pixels = [], 0
    yield from _predict_chunk(recognizer, chunk, batch_size)


def _predict_chunk(
    recognizer: Recognizer, chunk: list[FileOutcome], batch_size: int
) -> list[FileOutcome]:
    readable = [outcome for outcome in chunk if outcome.image is not None]
    images = [outcome.image for outcome in readable]
    for outcome, faces in zip(
        readable, recognizer.predict_many(images, batch_size=batch_size, rgb=True), strict=True
    ):
        outcome.result = ImageResult.of(str(outcome.file.path), outcome.image, faces)
    return chunk
