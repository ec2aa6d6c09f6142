"""The ``ferlab`` command: one verb per job; it only parses and calls the Python API."""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ferlab.config import (
    AUGMENT_PRESETS,
    SCHEDULERS,
    TRANSFER_STRATEGIES,
    TrainConfig,
    config_fields,
)
from ferlab.errors import FerlabError

FLAG_HELP = {
    "data": "data set: a class-folder tree, the FER2013 CSV or a path,label manifest CSV",
    "model": "registry name (see 'ferlab models')",
    "strategy": "frozen | finetune | progressive; a Lightning strategy such as ddp goes to "
    "--distributed (the flag may be given twice: --strategy progressive --strategy ddp)",
    "pretrained": "use the model's ImageNet weights where it has them (true/false)",
    "weights": "a local weights file instead of downloading",
    "keep": "classes to keep, e.g. angry,happy,sad (6-class: all but disgust)",
    "rename": "rename classes, e.g. anger=angry,sadness=sad",
    "merge": "merge classes, e.g. negative=angry+disgust+fear;positive=happy",
    "limit_per_class": "use at most N training images per class (quick experiments)",
    "image_size": "square size images are decoded and cached at",
    "input_size": "model input size (default: the model's)",
    "balance": "none | sampler (weighted sampling) | loss (class-weighted loss)",
    "devices": "devices per node: a count, a list like 0,1, or auto",
    "distributed": "Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...",
    "max_steps_per_epoch": "cap the training batches per epoch",
    "max_val_batches": "cap the validation batches per epoch",
    "augment": " | ".join(AUGMENT_PRESETS),
    "scheduler": " | ".join(SCHEDULERS),
    "head": "linear | mlp",
    "backbone_lr_factor": "backbone LR = lr x this",
    "stage_lr_decay": "progressive: each deeper stage's LR = the one above x this",
    "unfreeze_every": "progressive: epochs between unfreezing stages",
    "unfreeze_stages": "progressive: how many stages, from the top, get unfrozen",
    "precision": "auto (16-mixed on CUDA, else 32-true), bf16-mixed, ...",
    "color": "gray | rgb: how images are decoded",
    "on_bad_file": "skip | error: what to do with unreadable images",
    "patience": "early stopping: epochs without a better val accuracy (0: off)",
    "runs_dir": "where run folders are made",
    "name": "run folder name (default: MODEL-STRATEGY, numbered if taken)",
}


def _flag_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
    return str if annotation is bool else annotation


def _add_train_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model by transfer learning",
        description="Train a model. Flags override the values of --config FILE.yaml.",
    )
    parser.add_argument("--config", type=Path, help="YAML file with training options")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    defaults = TrainConfig()
    for name, annotation in config_fields().items():
        flag = "--" + name.replace("_", "-")
        text = FLAG_HELP.get(name, "")
        default = getattr(defaults, name)
        help_text = f"{text} (default: {default})" if text else f"default: {default}"
        if name == "strategy":
            parser.add_argument(flag, action="append", metavar="NAME", help=help_text)
            continue
        parser.add_argument(
            flag, type=_flag_type(annotation), default=None, metavar="X", help=help_text
        )
    parser.set_defaults(handler=_run_train)


def _split_strategies(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        out["strategy" if value in TRANSFER_STRATEGIES else "distributed"] = value
    return out


def _run_train(args: argparse.Namespace) -> int:
    from ferlab.config import load_config
    from ferlab.training.run import train

    values = {name: getattr(args, name) for name in config_fields() if name != "strategy"}
    values.update(_split_strategies(args.strategy))
    if args.resume is not None:
        overrides = {k: v for k, v in values.items() if v is not None}
        result = train(resume=args.resume, **overrides)
    else:
        result = train(load_config(args.config, **values))
    best = "n/a" if result.best_val_acc is None else f"{result.best_val_acc:.4f}"
    print(f"run: {result.run_dir}")
    print(f"epochs: {result.epochs_completed}  best val accuracy: {best}")
    print(f"model file: {result.model_file}")
    return 0


def _add_evaluate_parser(commands: Any) -> None:
    parser = commands.add_parser("evaluate", help="score a trained model on a data split")
    parser.add_argument("model", help="run folder or model file")
    parser.add_argument("--data", required=True, help="data set path")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument(
        "--out", type=Path, help="folder for metrics.json (default: beside the model)"
    )
    parser.add_argument("--keep", help=FLAG_HELP["keep"])
    parser.add_argument("--rename", help=FLAG_HELP["rename"])
    parser.add_argument("--merge", help=FLAG_HELP["merge"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--on-bad-file", choices=["skip", "error"], default="skip")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from ferlab.evaluation.evaluate import evaluate
    from ferlab.evaluation.metrics import format_report

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
    )
    print(f"{result.metrics['model']} on {args.data} [{args.split}]")
    print(format_report(result.metrics))
    print(f"\nwrote {result.out_dir / 'metrics.json'}")
    return 0


def _add_models_parser(commands: Any) -> None:
    parser = commands.add_parser("models", help="list the model registry")
    parser.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from ferlab.models.summary import registry_table

    for row in registry_table():
        print(row)
    return 0


def _add_predict_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "predict",
        help="recognise facial expressions in photos",
        description="Find faces and tell their expressions. Prints one line per face, or JSON/CSV; "
        "unreadable files are reported on stderr at the end (exit code 2 when none could be read).",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="image files, folders (recursive) or globs"
    )
    parser.add_argument(
        "--model",
        default="default",
        help="run folder, model file or .onnx export (default: the model shipped with ferlab)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list, one item per image")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per face")
    parser.add_argument(
        "--annotate", type=Path, metavar="DIR", help="write annotated copies here, same file names"
    )
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="classes shown per face (default: 3)"
    )
    parser.add_argument("--tta", action="store_true", help="average with the mirrored face")
    parser.add_argument("--no-detect", action="store_true", help="take each image as one face crop")
    parser.add_argument(
        "--min-face", type=int, default=24, metavar="PX", help="smallest face side (default: 24)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="faces per model batch"
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: .onnx files on onnxruntime, model files on PyTorch; onnx: a model file is "
        "exported once to the ferlab cache",
    )
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import csv
    import json

    from ferlab.inference.annotate import write_annotated
    from ferlab.inference.batch import find_images, predict_files
    from ferlab.inference.recognizer import Recognizer
    from ferlab.inference.report import csv_header, csv_rows, json_record, text_lines

    files, problems = find_images(args.sources)
    if not files:
        raise FerlabError("; ".join(problems))
    recognizer = Recognizer.load(
        args.model,
        backend=args.backend,
        detect=not args.no_detect,
        min_face=args.min_face,
        tta=args.tta,
    )
    records = []
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer is not None:
        writer.writerow(csv_header(recognizer.classes))
    show_bar = any(Path(source).is_dir() for source in args.sources)
    errors, readable = list(problems), 0
    with _progress(len(files), show_bar) as advance:
        for outcome in predict_files(recognizer, files, batch_size=args.batch_size):
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
                out = args.annotate / outcome.file.name
                write_annotated(out, outcome.image, outcome.faces, top_k=args.top_k)
    if args.json:
        print(json.dumps(records, indent=2))
    for message in errors:
        print(f"ferlab: error: {message}", file=sys.stderr)
    if errors:
        total = len(files) + len(problems)
        print(f"ferlab: {len(errors)} of {total} inputs could not be read", file=sys.stderr)
    return 0 if readable else 2


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


def _add_export_parser(commands: Any) -> None:
    parser = commands.add_parser("export", help="export a trained model to ONNX")
    parser.add_argument("model", help="run folder or model file")
    parser.add_argument("--format", choices=["onnx"], required=True)
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8 weights (static with --calibration, else dynamic)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="face crops for static int8 calibration (up to 512 are used, spread over the folder)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="default: beside the model, as model[-int8].onnx"
    )
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ferlab.inference.batch import find_images
    from ferlab.inference.onnx_export import export_onnx
    from ferlab.models.artifact import resolve_model_file

    model_file = resolve_model_file(args.model)
    suffix = "-int8" if args.quantize else ""
    out = args.out or model_file.with_name(f"{model_file.stem}{suffix}.onnx")
    calibration = None
    if args.calibration is not None:
        if args.quantize is None:
            raise FerlabError("--calibration is for --quantize int8")
        files, problems = find_images([str(args.calibration)])
        if not files:
            raise FerlabError("; ".join(problems))
        step = max(1, len(files) // 512)
        calibration = [file.path for file in files[::step][:512]]
    written = export_onnx(model_file, out, args.quantize, calibration=calibration)
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), like every other ferlab error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"ferlab: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="ferlab", description="Facial expression recognition.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)
    _add_evaluate_parser(commands)
    _add_models_parser(commands)
    _add_predict_parser(commands)
    _add_export_parser(commands)
    return parser


def _version() -> str:
    from ferlab import __version__

    return f"ferlab {__version__}"


def _one_line_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> str:
    return f"ferlab: warning: {str(message).splitlines()[0]}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return args.handler(args)
    except FerlabError as exc:
        print(f"ferlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
