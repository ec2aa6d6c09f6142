"""``ferlab webcam``: live expressions from a camera in a window."""

from __future__ import annotations

import argparse
from typing import Any

from ferlab.commands.recognizer_options import load_recognizer
from ferlab.commands.video import add_stream_options


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "webcam",
        help="live expressions from a camera, in a window",
        description="Show a camera with a box, label and probability bars per face, tracked and "
        "smoothed as in `ferlab video`. Needs a display and an OpenCV with GUI support; "
        "q or Esc quits.",
    )
    parser.add_argument(
        "--camera",
        default="0",
        metavar="CAMERA",
        help="camera index (0: the first) or a device path or stream URL (default: 0)",
    )
    add_stream_options(parser)
    parser.set_defaults(handler=_run_webcam)


def _run_webcam(args: argparse.Namespace) -> int:
    from ferlab.apps.capture import open_camera
    from ferlab.apps.webcam import check_display, run_webcam

    check_display()
    recognizer = load_recognizer(args)
    camera = open_camera(args.camera)
    shown = run_webcam(recognizer, camera, every=args.every, smooth=args.smooth, top_k=args.top_k)
    print(f"{camera.name}: {shown} frames shown")
    return 0
