"""``--engine local|ray`` and ``--ray-address`` for the commands that do bulk work."""

from __future__ import annotations

import argparse


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--ray-address``."""
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: Ray workers on this machine or a cluster "
        "(needs pip install 'ferlab[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --engine ray: the cluster to join, e.g. auto or HEAD:6379 (default: a new "
        "local Ray)",
    )
