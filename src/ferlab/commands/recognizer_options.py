"""The model and face options that every command running a Recognizer shares."""

from __future__ import annotations

import argparse
import dataclasses
import typing
import warnings
from typing import Any

from ferlab.commands.prior_option import add_prior_tau_option
from ferlab.commands.tta_option import add_tta_option
from ferlab.inference.face_options import FaceOptions

DETECTION_OPTIONS = ("min_face", "min_score", "margin", "detect_side")
"""Face options that only apply where faces are detected."""


def add_top_k_option(parser: argparse.ArgumentParser, shown: str) -> None:
    """``--top-k K``: how many classes each face shows (0 or more)."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
        return value

    parser.add_argument(
        "--top-k", type=count, default=3, metavar="K", help=f"classes {shown} (default: 3)"
    )


def add_recognizer_options(parser: argparse.ArgumentParser, *, detect: bool = True) -> None:
    """``--model``, ``--backend`` and the face options (``--no-detect`` only with ``detect``)."""
    parser.add_argument(
        "--model",
        default="default",
        help="shipped model (default, fer2013, ferplus), run folder, model file or .onnx export "
        "(default: default)",
    )
    add_backend_option(parser)
    add_face_options(parser, detect=detect)


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the runtime ``ferlab.load_model`` opens the model on."""
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: the shipped models and .onnx files on onnxruntime, other model files on "
        "PyTorch; onnx: a model file is exported once to the ferlab cache",
    )


def add_face_options(parser: argparse.ArgumentParser, *, detect: bool = True) -> None:
    """A flag per ``FaceOptions`` field (``--no-detect`` only with ``detect``), and
    ``--prior-tau``."""
    types = typing.get_type_hints(FaceOptions)
    for item in dataclasses.fields(FaceOptions):
        flag = item.name.replace("_", "-")
        if item.name == "tta":
            add_tta_option(parser)
        elif types[item.name] is bool:
            if detect:
                parser.add_argument(
                    f"--no-{flag}", dest=item.name, action="store_false", help=item.metadata["help"]
                )
        else:
            parser.add_argument(
                f"--{flag}",
                type=types[item.name],
                default=None,
                metavar=item.metadata["metavar"],
                help=f"{item.metadata['help']} (default: {item.default:g})",
            )
    add_prior_tau_option(parser)


def face_options(args: argparse.Namespace) -> FaceOptions:
    """The ``FaceOptions`` that ``add_face_options``' flags give."""
    names = [item.name for item in dataclasses.fields(FaceOptions)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if given.get("detect") is False:
        unused = [f"--{name.replace('_', '-')}" for name in given if name in DETECTION_OPTIONS]
        if unused:
            warnings.warn(
                f"{', '.join(unused)}: no effect with --no-detect (each image is one face crop)",
                stacklevel=2,
            )
    return FaceOptions(**given)


def load_recognizer(args: argparse.Namespace) -> Any:
    """The Recognizer that the model and face options describe."""
    from ferlab.inference.recognizer import Recognizer

    return Recognizer.load(**recognizer_options(args))


def recognizer_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Recognizer.load``'s arguments from the model and face options (for Ray workers too)."""
    return {
        "ref": args.model,
        "backend": args.backend,
        "options": face_options(args),
        "prior_tau": args.prior_tau,
    }
