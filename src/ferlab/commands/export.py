"""``ferlab export``: a trained model as ONNX (optionally int8)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ferlab.errors import ConfigError, DataError
from ferlab.outputs import check_writable


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("export", help="export a trained model to ONNX")
    parser.add_argument("model", help="run folder or model file")
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
        help="with --quantize int8: keep the first N convolutions (and the activations and sums "
        "between them) in float; default: what the model file recommends (33 for the shipped "
        "model, chosen on FER2013 PublicTest), else 0",
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
    check_writable(out.parent)
    calibration = None
    if args.calibration is not None:
        if args.quantize is None:
            raise ConfigError("--calibration is for --quantize int8")
        files, problems = find_images([str(args.calibration)])
        if not files:
            raise DataError("; ".join(problems))
        step = max(1, len(files) // 512)
        calibration = [file.path for file in files[::step][:512]]
    if args.float_convs is not None and args.quantize is None:
        raise ConfigError("--float-convs is for --quantize int8")
    written = export_onnx(
        model_file, out, args.quantize, calibration=calibration, float_convs=args.float_convs
    )
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    return 0
