"""``ferlab evaluate``: score a run or model file on a split of a data set and write a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.commands.prior_option import add_prior_tau_option
from ferlab.commands.recognizer_options import add_backend_option
from ferlab.commands.split_options import add_split_options
from ferlab.commands.train import FLAG_HELP, METAVARS
from ferlab.commands.tta_option import add_tta_option
from ferlab.progress import add_quiet_option


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("evaluate", help="score a trained model on a data split")
    parser.add_argument(
        "model",
        help="shipped model (default, fer2013, ferplus), run folder, model file or .onnx export "
        "(fp32 or int8)",
    )
    add_split_options(
        parser,
        "default for a run folder or its model.pt: the data and --labels it trained on",
        every=True,
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for metrics.json and the report (default: eval-SPLIT beside the model, "
        "else evaluations/MODEL-SPLIT here; numbered -2, -3, ... when taken)",
    )
    parser.add_argument(
        "--labels",
        metavar="VOTES.csv",
        help="score against crowd votes laid over the data (e.g. FER+'s ferplus.csv): the "
        "majority label per image, plus the model's agreement with the vote distribution",
    )
    add_prior_tau_option(parser)
    for name in ("keep", "rename", "merge"):
        parser.add_argument(f"--{name}", metavar=METAVARS[name], help=FLAG_HELP[name])
    parser.add_argument(
        "--batch-size", type=int, default=256, metavar="N", help="images per batch (default: 256)"
    )
    add_tta_option(parser)
    add_backend_option(parser)
    add_exist_ok_option(parser, "the report in an --out folder")
    add_quiet_option(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from ferlab.evaluation.evaluate import evaluate
    from ferlab.evaluation.metrics import format_report
    from ferlab.evaluation.report import run_description

    result = evaluate(
        args.model,
        args.data,
        split=args.split,
        out=args.out,
        keep=args.keep,
        rename=args.rename,
        merge=args.merge,
        batch_size=args.batch_size,
        on_bad_file=args.on_bad_file,
        tta=args.tta,
        labels=args.labels,
        backend=args.backend,
        prior_tau=args.prior_tau,
        exist_ok=args.exist_ok,
    )
    how = run_description(result.metrics)
    print(f"{result.metrics['model']} ({how}) on {result.metrics['data']} [{args.split}]")
    for note in ("data_note", "split_note"):
        if note in result.metrics:
            print(f"data: {result.metrics[note]}")
    print(format_report(result.metrics))
    print(f"\nwrote {result.out_dir}/: metrics.json, predictions.csv, report.md, report.html")
    return 0
