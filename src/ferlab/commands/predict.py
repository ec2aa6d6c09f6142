"""``ferlab predict``: faces and expressions in photos, folders and globs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ferlab.commands.recognizer_options import (
    add_face_options,
    add_model_options,
    load_recognizer,
)
from ferlab.errors import DataError, FerlabError
from ferlab.outputs import check_writable


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "predict",
        help="recognise facial expressions in photos",
        description="Find faces and tell their expressions. Prints one line per face, or JSON/CSV; "
        "unreadable files are reported on stderr at the end (exit code 1 when some could not be "
        "read, 2 when none could).",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="image files, folders (recursive) or globs"
    )
    add_model_options(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list, one item per image")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per face")
    parser.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write annotated copies here, same file names (-2, -3, ... where names repeat)",
    )
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="classes shown per face (default: 3)"
    )
    parser.add_argument("--no-detect", action="store_true", help="take each image as one face crop")
    add_face_options(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="faces per model batch"
    )
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import csv
    import json

    from ferlab.inference.annotate import write_annotated
    from ferlab.inference.batch import annotated_names, find_images, predict_files
    from ferlab.inference.report import csv_header, csv_rows, json_record, text_lines

    files, problems = find_images(args.sources)
    if not files:
        raise DataError("; ".join(problems))
    if args.annotate is not None:
        check_writable(args.annotate)
        annotated = annotated_names(files, args.annotate)
    recognizer = load_recognizer(args, detect=not args.no_detect)
    records = []
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer is not None:
        writer.writerow(csv_header(recognizer.classes, recognizer.va))
    show_bar = any(Path(source).is_dir() for source in args.sources)
    errors, readable = list(problems), 0
    with _progress(len(files), show_bar) as advance:
        outcomes = predict_files(recognizer, files, batch_size=args.batch_size)
        for index, outcome in enumerate(outcomes):
            advance()
            if outcome.faces is None or outcome.image is None:
                errors.append(str(outcome.error))
                continue
            readable += 1
            path = str(outcome.file.path)
            if args.json:
                records.append(json_record(path, outcome.faces))
            elif writer is not None:
                writer.writerows(csv_rows(path, outcome.faces, recognizer.classes))
            else:
                print("\n".join(text_lines(path, outcome.faces, args.top_k)))
            if args.annotate is not None:
                try:
                    write_annotated(
                        annotated[index], outcome.image, outcome.faces, top_k=args.top_k
                    )
                except FerlabError as exc:
                    errors.append(str(exc))
    if args.json:
        print(json.dumps(records, indent=2))
    for message in errors:
        print(f"ferlab: error: {message}", file=sys.stderr)
    if errors:
        total = len(files) + len(problems)
        print(f"ferlab: {len(errors)} of {total} inputs could not be read", file=sys.stderr)
    return 2 if not readable else 1 if errors else 0


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr where that is a terminal; yields the function that advances it."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield lambda: None
        return
    with Progress(console=console, redirect_stdout=sys.stdout.isatty()) as bar:
        task = bar.add_task("predict", total=total)
        yield lambda: bar.advance(task)
