"""``ferlab export``: a trained model as ONNX (optionally int8)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.errors import ConfigError, DataError
from ferlab.outputs import check_new, check_not_input, check_suffix, check_writable, numbered
from ferlab.progress import add_quiet_option

AGREEMENT_FLOOR = 0.99
"""Top-1 agreement of an int8 export with its float model below which export warns."""
CALIBRATION_CROPS = 512
"""The most calibration images used, spread over the folder given."""
FEW_CALIBRATION_CROPS = 64
"""Fewer calibration images than this get a warning."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("export", help="export a trained model to ONNX")
    parser.add_argument(
        "model", help="shipped model (default, fer2013, ferplus), run folder or model file"
    )
    parser.add_argument(
        "--format", choices=["onnx"], default="onnx", help="the only format so far (default: onnx)"
    )
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
        "--float-convs",
        type=int,
        metavar="N",
        help="with --quantize int8: keep the first N convolutions (of each member of an "
        "ensemble; with the activations and sums between them) in float; default: what the "
        "model file recommends (33 for the shipped model, chosen on FER2013 PublicTest), else 0",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="default: MODEL[-int8].onnx in the current folder, numbered -2, -3, ... when taken",
    )
    add_exist_ok_option(parser, "an existing --out file")
    add_quiet_option(parser)
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ferlab.inference.onnx_export import check_float_convs, export_onnx, load_exportable
    from ferlab.models.artifact import resolve_model_file

    model_file = resolve_model_file(args.model)
    suffix = "-int8" if args.quantize else ""
    name = f"{_model_name(args.model, model_file)}{suffix}.onnx"
    out = args.out or numbered(Path(name), file=True)
    check_suffix(out, ".onnx", "an ONNX model")
    check_not_input(out, {model_file.resolve()})
    check_new([out], args.exist_ok)
    check_writable(out.parent)
    if args.calibration is not None and args.quantize is None:
        raise ConfigError("--calibration is for --quantize int8")
    if args.float_convs is not None and args.quantize is None:
        raise ConfigError("--float-convs is for --quantize int8")
    bundle = load_exportable(model_file)
    if args.float_convs is not None:
        check_float_convs(bundle.model, args.float_convs)
    calibration = None if args.calibration is None else _calibration_crops(args.calibration)
    written = export_onnx(
        bundle, out, args.quantize, calibration=calibration, float_convs=args.float_convs
    )
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    if calibration is not None:
        _report_agreement(model_file, written, calibration)
    return 0


def _calibration_crops(folder: Path) -> list[Path]:
    """Up to CALIBRATION_CROPS readable images spread over ``folder`` (or the one file given);
    unreadable ones are left out with a warning, and a warning says when there are few."""
    from ferlab.inference.batch import find_images
    from ferlab.inference.images import check_image_source

    files, problems = find_images([str(folder)])
    if not files:
        raise DataError("; ".join(problems))
    step = max(1, len(files) // CALIBRATION_CROPS)
    readable, unreadable = [], []
    for file in files[::step][:CALIBRATION_CROPS]:
        try:
            check_image_source(file.path)
        except DataError as exc:
            unreadable.append(str(exc))
        else:
            readable.append(file.path)
    if unreadable:
        warnings.warn(
            f"--calibration: left out {len(unreadable)} unreadable file(s) (first: "
            f"{unreadable[0]})",
            stacklevel=2,
        )
    if not readable:
        raise DataError(f"{folder}: no readable calibration image")
    if len(readable) < FEW_CALIBRATION_CROPS:
        warnings.warn(
            f"--calibration: {len(readable)} crop(s) are few to set int8 ranges and to check "
            f"the export on; give at least {FEW_CALIBRATION_CROPS} face crops",
            stacklevel=2,
        )
    return readable


def _model_name(ref: str, model_file: Path) -> str:
    """What the export is named after: a run folder's name, a model file's stem, or the name
    given (``default``)."""
    given = Path(ref)
    if given.is_dir():
        return given.resolve().name
    return model_file.stem if given.is_file() else ref


def _report_agreement(model_file: Path, int8: Path, calibration: list[Path]) -> None:
    """Print the int8 export's top-1 agreement with the float model on the calibration crops;
    warn on stderr below AGREEMENT_FLOOR."""
    from ferlab.inference.quantization_check import top1_agreement

    agreement = top1_agreement(model_file, int8, calibration)
    print(
        f"int8 top-1 agreement with the float model: {agreement:.2%} "
        f"on {len(calibration)} calibration crops"
    )
    if agreement < AGREEMENT_FLOOR:
        print(
            f"ferlab: warning: the int8 export changes {1 - agreement:.1%} of the float model's "
            f"answers (below {AGREEMENT_FLOOR:.0%} agreement); check it with 'ferlab compare'",
            file=sys.stderr,
        )
