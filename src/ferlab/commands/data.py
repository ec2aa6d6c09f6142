"""``ferlab data``: inspect, deduplicate or crop a data set, or convert between the FER2013 CSV and
class folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.outputs import (
    check_new,
    check_not_input,
    check_outside_data,
    check_suffix,
    check_writable,
    numbered,
)
from ferlab.progress import add_quiet_option


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("data", help="inspect or convert a data set")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    inspect = actions.add_parser(
        "inspect", help="class balance, image sizes and modes, unreadable files, duplicates"
    )
    inspect.add_argument("path", help="class-folder tree, FER2013 CSV or manifest")
    inspect.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for inspect.json/.md and plots (default ./inspect-<name>, numbered -2, -3, "
        "... when taken)",
    )
    _add_near_threshold(inspect)
    add_exist_ok_option(inspect, "the inspect.json and inspect.md in an --out folder")
    add_quiet_option(inspect)
    inspect.set_defaults(handler=_run_inspect)

    dedupe = actions.add_parser(
        "dedupe",
        help="a path,label,split manifest without the cross-split duplicates inspect finds",
        description="Write a manifest of SRC's images less the copies of exact and near "
        "duplicates that lie in a later split than their twin (train is kept whole; val loses "
        "its twins of train images, test those of train or val), and <stem>-dropped.csv beside "
        "it listing each dropped image and the copy kept.",
    )
    dedupe.add_argument("src", help="class-folder tree or manifest")
    dedupe.add_argument("--out", type=Path, required=True, metavar="CSV", help="manifest to write")
    _add_near_threshold(dedupe)
    add_exist_ok_option(dedupe, "the manifest and its -dropped.csv")
    dedupe.set_defaults(handler=_run_dedupe)

    crop = actions.add_parser(
        "crop-faces",
        help="cut the faces out of photos, framed as inference frames them",
        description="Detect the faces in every image of SRC (class folders in any split layout, "
        "or a path,label manifest) and write square crops at the model's framing to DST at the "
        "same relative paths (a manifest gets a copy in DST naming the crops). Files with no "
        "face, several faces or a read error are listed in DST/crop-faces.csv. The detector "
        "gives no eye landmarks, so crops are not aligned.",
    )
    crop.add_argument("src", help="class-folder tree or manifest")
    crop.add_argument("dst", type=Path, help="new or empty folder for the crops")
    crop.add_argument(
        "--multi",
        choices=("largest", "skip", "all"),
        default="largest",
        help="an image with several faces: crop the largest (default), skip it, or crop all "
        "as <stem>_face<k>",
    )
    crop.add_argument(
        "--min-face", type=int, default=24, metavar="PX", help="smallest face side (default: 24)"
    )
    crop.set_defaults(handler=_run_crop_faces)

    convert = actions.add_parser(
        "convert", help="FER2013 CSV -> class folders, or class folders -> FER2013 CSV"
    )
    convert.add_argument("src", help="FER2013 CSV, or class-folder tree / manifest")
    convert.add_argument("dst", help="folder (from a CSV) or .csv file (from folders)")
    convert.add_argument(
        "--exist-ok",
        "--force",
        dest="force",
        action="store_true",
        help="replace a DST that an earlier conversion wrote",
    )
    add_quiet_option(convert)
    convert.set_defaults(handler=_run_convert)


def _add_near_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--near-threshold",
        type=int,
        default=4,
        metavar="BITS",
        help="near duplicates: pHash Hamming distance at most BITS (0-16, default 4)",
    )


def _run_inspect(args: argparse.Namespace) -> int:
    from ferlab.data.inspect import format_summary, inspect_dataset, write_inspection

    if args.out is not None:  # before the long work; a default folder is numbered instead
        check_outside_data(args.out, args.path)
        check_new([args.out / "inspect.json", args.out / "inspect.md"], args.exist_ok)
    check_writable(args.out or Path("."))
    inspection = inspect_dataset(args.path, near_threshold=args.near_threshold)
    name = Path(inspection.report["dataset"]).stem or "data"
    out = args.out or numbered(Path(f"inspect-{name}"))
    check_outside_data(out, args.path)
    write_inspection(inspection, out)  # the files first: a closed stdout loses only the digest
    print(format_summary(inspection.report))
    print(f"\nwrote {out / 'inspect.json'}, {out / 'inspect.md'} and plots")
    return 0


def _run_dedupe(args: argparse.Namespace) -> int:
    from ferlab.data.dedupe import deduplicate, dropped_path, write_deduplicated

    check_suffix(args.out, ".csv", "the manifest")
    check_not_input(args.out, {Path(args.src).expanduser().resolve()})
    check_new([args.out, dropped_path(args.out)], args.exist_ok)
    check_writable(args.out.parent)
    result = deduplicate(args.src, near_threshold=args.near_threshold)
    report = write_deduplicated(result, args.out)
    counts = result.counts()
    dropped = "; ".join(
        f"{split}: {entry['exact']} exact, {entry['near']} near" for split, entry in counts.items()
    )
    print(
        f"{args.src}: kept {len(result.rows)} images, dropped {len(result.dropped)}"
        f" ({dropped or 'no cross-split duplicates'})"
    )
    if result.unreadable:
        first = result.unreadable[0]
        print(
            f"ferlab: warning: {args.src}: left out {len(result.unreadable)} unreadable "
            f"file(s) (first: {first['file']}: {first['reason']}); listed in {report.name}",
            file=sys.stderr,
        )
    print(f"wrote {args.out} and {report}")
    return 1 if result.unreadable else 0


def _run_crop_faces(args: argparse.Namespace) -> int:
    from ferlab.inference.crop_faces import REPORT_NAME, crop_faces

    check_writable(args.dst)
    summary = crop_faces(args.src, args.dst, multi=args.multi, min_face=args.min_face)
    print(f"{args.src} -> {args.dst}: {summary.line()}")
    print(f"wrote {args.dst / REPORT_NAME} ({len(summary.problems)} file(s) listed)")
    if summary.unreadable:
        print(
            f"ferlab: {summary.unreadable} of {summary.images} images could not be read "
            f"(listed in {REPORT_NAME})",
            file=sys.stderr,
        )
    return 1 if summary.unreadable else 0


def _run_convert(args: argparse.Namespace) -> int:
    from ferlab.data.convert import convert_dataset

    result = convert_dataset(args.src, args.dst, force=args.force)
    sizes = ", ".join(f"{split} {count}" for split, count in result.counts.items())
    print(f"{args.src} -> {result.dst} ({result.direction}): {sizes}")
    if result.split_note():
        print(f"note: {result.split_note()}")
    if result.skipped:
        print(f"ferlab: skipped {len(result.skipped)} unreadable input(s):", file=sys.stderr)
        for file, reason in result.skipped[:5]:
            print(f"  {file}: {reason}", file=sys.stderr)
    return 1 if result.skipped else 0
