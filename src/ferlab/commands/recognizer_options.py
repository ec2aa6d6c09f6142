"""The model and face options that every command running a Recognizer shares."""

from __future__ import annotations

import argparse
from typing import Any

from ferlab.commands.prior_option import add_prior_tau_option
from ferlab.commands.tta_option import add_tta_option


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--backend``."""
    parser.add_argument(
        "--model",
        default="default",
        help="run folder, model file or .onnx export (default: the model shipped with ferlab)",
    )
    add_backend_option(parser)


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the runtime ``ferlab.load_model`` opens the model on."""
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: the shipped models and .onnx files on onnxruntime, other model files on "
        "PyTorch; onnx: a model file is exported once to the ferlab cache",
    )


def add_face_options(parser: argparse.ArgumentParser) -> None:
    """Detection, cropping and test-time augmentation options."""
    add_tta_option(parser)
    add_prior_tau_option(parser)
    parser.add_argument(
        "--min-face", type=int, default=24, metavar="PX", help="smallest face side (default: 24)"
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=0.6,
        metavar="P",
        help="smallest detector confidence kept, 0-1 (default: 0.6)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        metavar="F",
        help="extra crop border per side, as a fraction of the face box (default: 0)",
    )
    parser.add_argument(
        "--detect-side",
        type=int,
        default=480,
        metavar="PX",
        help="larger images are shrunk to this longer side for detection only; raise it for "
        "small faces in big photos (default: 480)",
    )


def load_recognizer(args: argparse.Namespace, *, detect: bool = True) -> Any:
    """The Recognizer that the model and face options describe."""
    from ferlab.inference.recognizer import Recognizer

    return Recognizer.load(**recognizer_options(args, detect=detect))


def recognizer_options(args: argparse.Namespace, *, detect: bool = True) -> dict[str, Any]:
    """``Recognizer.load``'s arguments from the model and face options (for Ray workers too)."""
    return {
        "ref": args.model,
        "backend": args.backend,
        "detect": detect,
        "min_face": args.min_face,
        "margin": args.margin,
        "tta": args.tta,
        "min_score": args.min_score,
        "detect_side": args.detect_side,
        "prior_tau": args.prior_tau,
    }
