"""``ferlab data``: inspect a data set, or convert between the FER2013 CSV and class folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.outputs import check_new, check_writable, numbered
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
    inspect.add_argument(
        "--near-threshold",
        type=int,
        default=4,
        metavar="BITS",
        help="near duplicates: pHash Hamming distance at most BITS (0-16, default 4)",
    )
    add_exist_ok_option(inspect, "the inspect.json and inspect.md in an --out folder")
    add_quiet_option(inspect)
    inspect.set_defaults(handler=_run_inspect)

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


def _run_inspect(args: argparse.Namespace) -> int:
    from ferlab.data.inspect import format_summary, inspect_dataset, write_inspection

    if args.out is not None:  # before the long work; a default folder is numbered instead
        check_new([args.out / "inspect.json", args.out / "inspect.md"], args.exist_ok)
    check_writable(args.out or Path("."))
    inspection = inspect_dataset(args.path, near_threshold=args.near_threshold)
    name = Path(inspection.report["dataset"]).stem or "data"
    out = args.out or numbered(Path(f"inspect-{name}"))
    print(format_summary(inspection.report))
    write_inspection(inspection, out)
    print(f"\nwrote {out / 'inspect.json'}, {out / 'inspect.md'} and plots")
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    from ferlab.data.convert import convert_dataset

    result = convert_dataset(args.src, args.dst, force=args.force)
    sizes = ", ".join(f"{split} {count}" for split, count in result.counts.items())
    print(f"{args.src} -> {result.dst} ({result.direction}): {sizes}")
    if result.val_from_train:
        print("note: no val split in the source; val was split off train")
    if result.skipped:
        print(f"skipped {len(result.skipped)}:")
        for file, reason in result.skipped[:5]:
            print(f"  {file}: {reason}")
    return 0
