"""``--tta MODE`` / ``--no-tta``: test-time augmentation for the commands that run a model."""

from __future__ import annotations

import argparse

from ferlab.tta_modes import TTA_MODES


def add_tta_option(parser: argparse.ArgumentParser) -> None:
    """``--tta flip|shift|none`` and ``--no-tta`` (none); unset: as the model file says."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--tta",
        choices=TTA_MODES,
        metavar="MODE",
        help="average over views of each face: flip (it and its mirror image), shift (flip plus "
        "4 small shifts, 10 views: more accurate, 5x the model time) or none; default: as the "
        "model file says (flip for the shipped model)",
    )
    group.add_argument("--no-tta", dest="tta", action="store_const", const="none", help="one view")
