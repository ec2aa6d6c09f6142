"""``ferlab predict``: faces and expressions in photos, folders and globs."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferlab.commands.engine_option import add_engine_options
from ferlab.commands.recognizer_options import (
    add_recognizer_options,
    add_top_k_option,
    load_recognizer,
    recognizer_options,
)
from ferlab.errors import ConfigError, FerlabError
from ferlab.outputs import check_writable
from ferlab.progress import Bar, add_quiet_option, bar

if TYPE_CHECKING:
    from ferlab.inference.batch import FileOutcome, ImageFile
    from ferlab.inference.image_results import ImageResult
    from ferlab.inference.recognizer import Recognizer
    from ferlab.inference.results_file import ResultsFile


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "predict",
        help="recognize facial expressions in photos",
        description="Find faces and tell their expressions. Prints one line per face, or JSON/CSV, "
        "or writes them to --out as they come; unreadable files are reported on stderr as they "
        "come, sources that gave nothing at the end (exit code 1 when some could not be read, 2 "
        "when none could).",
    )
    parser.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="image files, folders (recursive) or globs"
    )
    parser.add_argument(
        "--list",
        type=Path,
        metavar="FILE",
        help="also the image paths in FILE, one a line, read as they are needed (-: stdin)",
    )
    add_recognizer_options(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list, one item per image")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per face")
    parser.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write annotated copies here under the inputs' names (-2, -3, ... where taken)",
    )
    add_top_k_option(parser, "shown per face")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="faces per model batch (default: 64)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write results as they come to FILE.jsonl, FILE.csv or FILE.parquet (a folder of "
        "parts; needs pip install 'ferlab[parquet]') instead of printing them",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --out: continue an interrupted run, skipping the images already in FILE",
    )
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="take the K-th of N shares of the sorted inputs (every Nth file from the K-th), so "
        "that N machines can split the work with the same command",
    )
    add_quiet_option(parser)
    add_engine_options(parser)
    parser.add_argument(
        "--workers", type=int, metavar="N", help="with --engine ray: actors (default: its CPUs)"
    )
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from ferlab.inference.annotate import annotated_name, write_annotated
    from ferlab.inference.batch import OutputNames
    from ferlab.inference.bulk import parse_shard, pending_images

    _check_options(args)
    annotated = None
    if args.annotate is not None:
        check_writable(args.annotate)
        annotated = OutputNames(args.annotate, annotated_name)
    shard = None if args.shard is None else parse_shard(args.shard)
    if args.engine == "ray":
        from ferlab.inference.ray_engine import connect

        connect(args.ray_address)  # before any output is opened
    recognizer = load_recognizer(args)
    sink: ResultsFile = _Printer(args, recognizer)
    done: set[str] = set()
    if args.out is not None:
        from ferlab.inference.results_file import open_results

        sink, done = open_results(args.out, recognizer.classes, recognizer.va, resume=args.resume)
    problems: list[str] = []
    files = pending_images(args.sources, problems, list_file=args.list, shard=shard, done=done)
    skipped: list[Path] = []
    if args.annotate is not None:
        files = _outside(files, args.annotate, skipped)
    errors = inputs = unwritten = faces = 0
    try:
        with bar("predict", unit="files") as line:
            for outcome in _outcomes(args, recognizer, _counted(files, line)):
                inputs += 1
                result = outcome.result
                if result is None:
                    errors += 1
                    print(f"ferlab: error: {outcome.error}", file=sys.stderr)
                    continue
                sink.write(result)
                faces += len(result.faces)
                line.note(f"{faces} faces in {inputs - errors} files")
                if annotated is not None and outcome.image is not None:
                    try:
                        drawn = result.annotate(outcome.image, top_k=args.top_k)
                        write_annotated(annotated(outcome.file), drawn)
                    except FerlabError as exc:
                        unwritten += 1
                        print(f"ferlab: error: {exc}", file=sys.stderr)
    finally:
        sink.close()
    if skipped:
        print(
            f"ferlab: left out {len(skipped)} image(s) in the --annotate folder {args.annotate} "
            f"(annotated copies; first: {skipped[0]})",
            file=sys.stderr,
        )
    code = _report(errors, inputs, problems)
    if args.out is not None:
        kept = f"; {len(done)} were there already" if args.resume else ""
        print(f"ferlab: {inputs - errors} image(s) written to {args.out}{kept}", file=sys.stderr)
    note = None if annotated is None else annotated.renamed_note()
    if note:
        print(f"ferlab: {note}", file=sys.stderr)
    if unwritten:
        print(f"ferlab: {unwritten} annotated images could not be written", file=sys.stderr)
    return max(code, 1) if unwritten else code


def _check_options(args: argparse.Namespace) -> None:
    if not args.sources and args.list is None:
        raise ConfigError("nothing to predict on: give image files, folders, globs or --list")
    if args.resume and args.out is None:
        raise ConfigError("--resume continues an --out FILE; give --out")
    if args.out is not None and (args.json or args.csv):
        raise ConfigError("--out writes the results; --json and --csv are for printing them")
    if args.engine == "ray" and args.annotate is not None:
        raise ConfigError("--annotate draws in this process; use it with --engine local")
    if args.engine != "ray" and (args.ray_address or args.workers is not None):
        raise ConfigError("--ray-address and --workers are for --engine ray")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.list is not None:
        from ferlab.inference.bulk import check_list_file

        check_list_file(args.list)


def _outcomes(
    args: argparse.Namespace, recognizer: Recognizer, files: Iterable[ImageFile]
) -> Iterator[FileOutcome]:
    from ferlab.inference.batch import predict_files

    if args.engine == "local":
        return predict_files(recognizer, files, batch_size=args.batch_size)
    from ferlab.inference.ray_engine import ray_outcomes

    return ray_outcomes(
        files,
        recognizer_options(args),
        batch_size=args.batch_size,
        workers=args.workers,
        address=args.ray_address,
    )


SMALL_FACE_HINT = 4
"""A faceless image this many times the detection size gets a --detect-side hint."""


class _Printer:
    """Results on stdout (a ResultsFile): text lines and CSV rows as they come, or a JSON list
    at the end."""

    def __init__(self, args: argparse.Namespace, recognizer: Recognizer) -> None:
        from ferlab.inference.image_results import csv_header

        self.args = args
        self.classes = recognizer.classes
        self.va = recognizer.va
        self.records: list[dict[str, Any]] = []
        options = recognizer.options
        self.detect_side = options.detect_side if options.detect else None
        self.table = csv.writer(sys.stdout) if args.csv else None
        if self.table is not None:
            self.table.writerow(csv_header(self.classes, self.va))

    def write(self, result: ImageResult) -> None:
        if self.args.json:
            self.records.append(result.to_dict())
        elif self.table is not None:
            self.table.writerows(result.csv_rows(self.classes, self.va))
        else:
            lines = result.lines(self.args.top_k)
            side = max(result.width, result.height)
            if not result.faces and self.detect_side and side >= SMALL_FACE_HINT * self.detect_side:
                lines[0] += (
                    f" (detection saw this {result.width}x{result.height} image at "
                    f"{self.detect_side} px; a larger --detect-side finds smaller faces)"
                )
            print("\n".join(lines))

    def close(self) -> None:
        if self.args.json:
            print(json.dumps(self.records, indent=2))


def _report(errors: int, inputs: int, problems: list[str]) -> int:
    """Problems and the count of failures on stderr; the exit code."""
    for message in problems:
        print(f"ferlab: error: {message}", file=sys.stderr)
    failed, total = errors + len(problems), inputs + len(problems)
    if failed:
        print(f"ferlab: {failed} of {total} inputs could not be read", file=sys.stderr)
    return 2 if failed == total and failed else 1 if failed else 0


def _outside(files: Iterable[ImageFile], folder: Path, skipped: list[Path]) -> Iterator[ImageFile]:
    """``files`` but those in ``folder`` where it lies below the folder they were found in (the
    annotated copies of an earlier run), which go to ``skipped``."""
    root = folder.resolve()
    for file in files:
        found_in = file.path.parents[len(file.name.parts) - 1].resolve()
        path = file.path.resolve()
        if root != found_in and root.is_relative_to(found_in) and path.is_relative_to(root):
            skipped.append(file.path)
        else:
            yield file


def _counted(files: Iterable[ImageFile], line: Bar) -> Iterator[ImageFile]:
    """``files``, advancing ``line`` as each is taken up (before its batch is run)."""
    for file in files:
        line.advance()
        yield file
