"""``ferlab compare``: trained models side by side on one split, with McNemar's tests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.commands.recognizer_options import add_backend_option
from ferlab.commands.split_options import add_split_options
from ferlab.commands.train import FLAG_HELP, METAVARS
from ferlab.commands.tta_option import add_tta_option
from ferlab.outputs import check_new, check_outside_data, check_writable
from ferlab.progress import add_quiet_option

COMPARE_FILES = ("compare.md", "compare.html")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare trained models on one data split",
        description="Score runs or model files on the same split (accuracy, macro-F1, kappa, "
        "ECE, size, training time, speed), test each pair with McNemar's test, print a Markdown "
        "table and write compare.md and compare.html.",
    )
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help='"default", run folders, model files or .onnx exports (fp32 or int8)',
    )
    add_split_options(parser)
    parser.add_argument(
        "--alpha", type=float, default=0.05, metavar="P", help="significance level (default: 0.05)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("."), metavar="DIR", help="default: the current folder"
    )
    parser.add_argument(
        "--labels",
        metavar="VOTES.csv",
        help="score against crowd votes laid over the data (as 'ferlab evaluate --labels')",
    )
    for name in ("keep", "rename", "merge"):
        parser.add_argument(f"--{name}", metavar=METAVARS[name], help=FLAG_HELP[name])
    add_tta_option(parser)
    add_backend_option(parser)
    add_exist_ok_option(parser, "compare.md and compare.html")
    add_quiet_option(parser)
    parser.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from ferlab.evaluation.compare import compare_models

    check_outside_data(args.out, args.data)
    check_new([args.out / name for name in COMPARE_FILES], args.exist_ok)
    check_writable(args.out)
    comparison = compare_models(
        list(args.models),
        args.data,
        split=args.split,
        alpha=args.alpha,
        on_bad_file=args.on_bad_file,
        tta=args.tta,
        labels=args.labels,
        backend=args.backend,
        keep=args.keep,
        rename=args.rename,
        merge=args.merge,
    )
    written = comparison.write(args.out)  # the files first: a closed stdout loses only the table
    print(comparison.markdown())
    for path in written:
        print(f"wrote {path}")
    return 0
