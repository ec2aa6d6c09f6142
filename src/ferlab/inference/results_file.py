"""Prediction results written as they come, to JSON Lines, CSV or Parquet, and read back to resume.

- ``.jsonl``: one ``{"path": ..., "width": ..., "height": ..., "faces": [...]}`` object per image,
  as ``ferlab predict --json``;
- ``.csv``: ``ferlab predict --csv``'s rows (``ferlab.inference.image_results.csv_header``), one per
  face, and one with face 0 and empty cells for an image without a face, so that every image
  done has a row;
- ``.parquet``: a folder of part files with the CSV's columns, typed (null where the CSV is
  empty); each part is written whole (renamed into place) every ``PARQUET_ROWS`` rows and at the
  end. pandas, pyarrow or DuckDB read the folder as one table. Needs pyarrow (``ferlab[parquet]``).

``open_results(..., resume=True)`` first drops a partly written last line (an interrupted run)
and reads which images are done; without ``resume`` an existing output is refused.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Protocol

from ferlab.errors import ConfigError, DataError
from ferlab.inference.image_results import ImageResult, csv_header

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
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        return _ParquetResults(out, classes, va), _parquet_done(out)
    done = _line_file_done(out, suffix, csv_header(classes, va)) if out.exists() else set()
    handle = out.open("a", newline="")
    if suffix == ".csv":
        return _CsvResults(handle, classes, va), done
    return _JsonlResults(handle), done


class _JsonlResults:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def write(self, result: ImageResult) -> None:
        self.handle.write(json.dumps(result.to_dict()) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class _CsvResults:
    def __init__(self, handle: Any, classes: list[str], va: bool) -> None:
        self.handle = handle
        self.classes = classes
        self.va = va
        self.table = csv.writer(handle)
        if handle.tell() == 0:
            self.table.writerow(csv_header(classes, va))

    def write(self, result: ImageResult) -> None:
        self.table.writerows(result.csv_rows(self.classes, self.va))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


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
        out.mkdir(exist_ok=True)
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
        target = self.out / f"part-{self.part:05d}.parquet"
        partial = self.out / f".{target.name}.partial"
        pq.write_table(table, partial)
        os.replace(partial, target)
        self.part += 1
        self.rows = []


def _line_file_done(out: Path, suffix: str, header: list[str]) -> set[str]:
    """The paths in a JSON Lines or CSV output, after cutting a partly written last line."""
    _drop_partial_line(out)
    with out.open(newline="") as handle:
        if suffix == ".jsonl":
            return {_jsonl_path(out, number, line) for number, line in enumerate(handle, 1)}
        rows = csv.reader(handle)
        found = next(rows, None)
        if found is not None and found != header:
            raise DataError(
                f"{out}: written with other columns (another model or ferlab version?); "
                "cannot resume it"
            )
        return {row[0] for row in rows if row}


def _jsonl_path(out: Path, number: int, line: str) -> str:
    try:
        return str(json.loads(line)["path"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{out}: line {number} is not a result record; cannot resume") from None


def _drop_partial_line(out: Path) -> None:
    with out.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            handle.truncate(end)


def _parquet_done(out: Path) -> set[str]:
    if not out.exists():
        return set()
    _pyarrow(out)
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(out.glob("part-*.parquet")):
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
