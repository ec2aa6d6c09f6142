"""Many image files through a recognizer: find them, decode in chunks, keep going past bad ones."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.data.tables import IMAGE_EXTENSIONS
from ferlab.errors import DataError
from ferlab.inference.images import load_image
from ferlab.inference.recognizer import Recognizer
from ferlab.inference.results import FaceResult

_CHUNK_PIXELS = 64_000_000  # decoded images held at once, at most (plus one)


@dataclass
class ImageFile:
    """A file to predict on; ``name`` is its path below the folder it was found in."""

    path: Path
    name: Path


@dataclass
class FileOutcome:
    """The faces found in a file and its decoded RGB pixels, or why it could not be read."""

    file: ImageFile
    faces: list[FaceResult] | None = None
    image: np.ndarray | None = None
    error: str | None = None


def find_images(sources: Sequence[str]) -> tuple[list[ImageFile], list[str]]:
    """Files named, image files below folders (recursively) and glob matches, sorted per source;
    and one message for each source that gave nothing."""
    files: list[ImageFile] = []
    problems: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = _images_below(path, problems)
            files.extend(ImageFile(p, p.relative_to(path)) for p in found)
            if not found:
                problems.append(f"{path}: no image files in this folder")
        elif path.exists():
            files.append(ImageFile(path, Path(path.name)))
        elif glob.has_magic(source):
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True))
            files.extend(ImageFile(p, Path(p.name)) for p in matches if p.is_file())
            if not matches:
                problems.append(f"{source}: no file matches this pattern")
        else:
            problems.append(f"{source}: no such file or folder")
    return files, problems


def _images_below(folder: Path, problems: list[str]) -> list[Path]:
    """Image files below ``folder``, sorted; a sub-folder that cannot be read adds a problem."""

    def unreadable(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot read folder ({(exc.strerror or '').lower()})")

    found = [
        Path(root) / name
        for root, _, names in os.walk(folder, onerror=unreadable)
        for name in names
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS and (Path(root) / name).is_file()
    ]
    return sorted(found)


def annotated_names(files: Sequence[ImageFile], folder: Path) -> list[Path]:
    """One output path in ``folder`` per file, by its name; names that repeat, or that would
    land on one of the input files, get ``-2``, ``-3``, ... before the extension."""
    inputs = {file.path.resolve() for file in files}
    taken: set[Path] = set()
    names = []
    for file in files:
        out, number = folder / file.name, 1
        while out in taken or out.resolve() in inputs:
            number += 1
            out = folder / file.name.with_name(f"{file.name.stem}-{number}{file.name.suffix}")
        taken.add(out)
        names.append(out)
    return names


def predict_files(
    recognizer: Recognizer, files: Sequence[ImageFile], *, batch_size: int = 64
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
        outcome.faces = faces
    return chunk
