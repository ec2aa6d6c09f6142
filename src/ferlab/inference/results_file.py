"""Prediction results written as they come, to JSON Lines, CSV or Parquet, and read back to resume.

- ``.jsonl``: one ``{"path": ..., "width": ..., "height": ..., "faces": [...]}`` object per image,
  as ``ferlab predict --json``;
- ``.csv``: ``ferlab predict --csv``'s rows (``ferlab.inference.image_results.csv_header``), one per
  face, and one with face 0 and empty cells for an image without a face, so that every image
  done has a row;
- ``.parquet``: a folder of part files with the CSV's columns, typed (null where the CSV is
  empty); each part is written whole (renamed into place) every ``PARQUET_ROWS`` rows and at the
  end. pandas, pyarrow or DuckDB read the folder as one table. Needs pyarrow (``ferlab[parquet]``).

``open_results(..., resume=True)`` reads which images are done, after checking that the output
holds this model's results (its columns, classes and valence/arousal), and then drops a partly
written last line (an interrupted run); without ``resume`` an existing output is refused. Nothing
is created before the first result is written.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ferlab.errors import ConfigError, DataError
from ferlab.inference.image_results import ImageResult, csv_header
from ferlab.outputs import check_writable

FORMATS = (".jsonl", ".csv", ".parquet")
PARQUET_ROWS = 10_000
_INTEGERS = ("frame", "face", "track", "x1", "y1", "x2", "y2")
_TEXTS = ("path", "label", "raw_label")


class ResultsFile(Protocol):
    """Where ``ferlab predict --out`` writes: one call per image, in the order they are done."""

    def write(self, result: ImageResult) -> None: ...

    def close(self) -> None: ...


def open_results(
    out: Path, classes: list[str], va: bool, *, resume: bool
) -> tuple[ResultsFile, set[str]]:
    """The writer for ``out`` (its format told by the extension) and the paths already in it."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{out}: cannot write results here; use {', '.join(FORMATS)}")
    if out.exists() and not resume:
        raise DataError(f"{out}: exists; add --resume to continue it, or remove it")
    check_writable(out.parent)
    if suffix == ".parquet":
        return _ParquetResults(out, classes, va), _parquet_done(out, csv_header(classes, va))
    done = _line_file_done(out, suffix, classes, va) if out.exists() else set()
    if suffix == ".csv":
        return _CsvResults(out, classes, va), done
    return _JsonlResults(out), done


class _LineFile:
    """A text file opened for appending at the first write (its folder made then)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.handle: Any = None

    def _open(self) -> Any:
        if self.handle is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.out.open("a", newline="")
            self._started()
        return self.handle

    def _started(self) -> None:
        """What a new file begins with."""

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class _JsonlResults(_LineFile):
    def write(self, result: ImageResult) -> None:
        handle = self._open()
        handle.write(json.dumps(result.to_dict()) + "\n")
        handle.flush()


class _CsvResults(_LineFile):
    def __init__(self, out: Path, classes: list[str], va: bool) -> None:
        super().__init__(out)
        self.classes = classes
        self.va = va

    def _started(self) -> None:
        if self.handle.tell() == 0:
            csv.writer(self.handle).writerow(csv_header(self.classes, self.va))

    def write(self, result: ImageResult) -> None:
        handle = self._open()
        csv.writer(handle).writerows(result.csv_rows(self.classes, self.va))
        handle.flush()


class _ParquetResults:
    def __init__(self, out: Path, classes: list[str], va: bool) -> None:
        pa = _pyarrow(out)
        self.out = out
        self.classes = classes
        self.va = va
        types = {name: pa.int32() for name in _INTEGERS} | {name: pa.string() for name in _TEXTS}
        header = csv_header(classes, va)
        self.schema = pa.schema([(name, types.get(name, pa.float64())) for name in header])
        self.rows: list[list[Any]] = []
        numbers = (int(part.stem.removeprefix("part-")) for part in out.glob("part-*.parquet"))
        self.part = 1 + max(numbers, default=-1)

    def write(self, result: ImageResult) -> None:
        self.rows.extend(result.rows(self.classes, self.va))
        if len(self.rows) >= PARQUET_ROWS:
            self._write_part()

    def close(self) -> None:
        if self.rows:
            self._write_part()

    def _write_part(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*self.rows, strict=True))
        table = pa.Table.from_arrays(
            [
                pa.array(values, type=field.type, from_pandas=False)
                for values, field in zip(columns, self.schema, strict=True)
            ],
            schema=self.schema,
        )
        self.out.mkdir(parents=True, exist_ok=True)
        target = self.out / f"part-{self.part:05d}.parquet"
        partial = self.out / f".{target.name}.partial"
        pq.write_table(table, partial)
        os.replace(partial, target)
        self.part += 1
        self.rows = []


def _line_file_done(out: Path, suffix: str, classes: list[str], va: bool) -> set[str]:
    """The paths in a JSON Lines or CSV output of this model; a partly written last line is cut
    once the rest has been read as such (a file of anything else is left as it is)."""
    tail = _Tail()
    with out.open("rb") as handle:
        lines = tail.complete(handle)
        if suffix == ".csv":
            header = csv_header(classes, va)
            rows = csv.reader(lines)
            found = next(rows, None)
            if found is None:  # at most a partly written header
                found = header if ",".join(header).startswith(tail.partial) else []
            if found != header:
                raise DataError(
                    f"{out}: written with other columns (another model, ferlab version or "
                    "program?); cannot resume it"
                )
            done = {row[0] for row in rows if row}
        else:
            expected = set(classes)
            done = {_jsonl_path(out, n, line, expected, va) for n, line in enumerate(lines, 1)}
            if tail.partial and not tail.partial.startswith('{"path": '):
                raise DataError(f"{out}: its last line is not a result record; cannot resume")
    if tail.partial:
        with out.open("rb+") as handle:
            handle.truncate(tail.end)
    return done


class _Tail:
    """Reads a file's complete lines and keeps what follows the last newline."""

    def __init__(self) -> None:
        self.partial = ""
        self.end = 0

    def complete(self, handle: Any) -> Iterator[str]:
        """``handle``'s lines that end in a newline, decoded; sets ``partial`` and ``end``."""
        for raw in handle:
            if not raw.endswith(b"\n"):
                self.partial = raw.decode("utf-8", "replace")
                return
            self.end += len(raw)
            yield raw.decode("utf-8", "replace")


def _jsonl_path(out: Path, number: int, line: str, classes: set[str], va: bool) -> str:
    try:
        record = json.loads(line)
        path = str(record["path"])
        faces = record["faces"]
        for face in faces:
            if set(face["probs"]) != classes or ("valence" in face) != va:
                raise DataError(
                    f"{out}: line {number} holds another model's classes "
                    f"({', '.join(face['probs'])}); cannot resume it with this model"
                )
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{out}: line {number} is not a result record; cannot resume") from None
    return path


def _parquet_done(out: Path, header: list[str]) -> set[str]:
    if not out.exists():
        return set()
    _pyarrow(out)
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(out.glob("part-*.parquet")):
        names = pq.read_schema(part).names
        if names != header:
            raise DataError(
                f"{part}: written with other columns (another model or ferlab version?); "
                "cannot resume it"
            )
        done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
    return done


def _pyarrow(out: Path) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ConfigError(
            f"{out}: Parquet output needs pyarrow: pip install 'ferlab[parquet]'"
        ) from None
    return pyarrow
