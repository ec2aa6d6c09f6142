"""``ferlab ensemble``: trained models averaged into one model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.errors import ConfigError
from ferlab.outputs import check_new, check_not_input, check_suffix, check_writable, numbered


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "ensemble",
        help="average trained models into one model file",
        description="Average the class probabilities of two or more trained models (same "
        "classes, crops decoded the same way) into one model file that every command, the "
        "service and ONNX export take like any other; it carries the first model's "
        "preprocessing and test-time augmentation.",
    )
    parser.add_argument(
        "models", nargs="+", help="run folders, model files or shipped model names (two or more)"
    )
    parser.add_argument(
        "--weights",
        metavar="W,W,...",
        help="one weight per model, comma-separated (default: equal)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="default: ensemble.pt in the current folder, numbered -2, -3, ... when taken",
    )
    add_exist_ok_option(parser, "an existing --out file")
    parser.set_defaults(handler=_run_ensemble)


def parse_weights(text: str | None) -> list[float] | None:
    """``"1,2"`` → ``[1.0, 2.0]`` (their count and values are checked with the models)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        message = f"--weights: expected numbers separated by commas, got '{text}'"
        raise ConfigError(message) from None


def _run_ensemble(args: argparse.Namespace) -> int:
    from ferlab.models.artifact import resolve_model_file, save_model_file
    from ferlab.models.combine import combine_models

    weights = parse_weights(args.weights)
    files = [resolve_model_file(model).resolve() for model in args.models]
    out = args.out or numbered(Path("ensemble.pt"), file=True)
    check_suffix(out, ".pt", "a ferlab model file")
    check_not_input(out, set(files))
    check_new([out], args.exist_ok)
    check_writable(out.parent)
    bundle = combine_models(args.models, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model_file(out, bundle)
    members = bundle.spec.members
    names = ", ".join(f"{m.name} ({m.weight:g})" for m in members)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(members)} models: {names}")
    print(f"classes: {', '.join(bundle.spec.classes)}; test-time augmentation: {bundle.spec.tta}")
    return 0
