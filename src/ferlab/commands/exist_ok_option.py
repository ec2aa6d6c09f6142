"""``--exist-ok``: the one flag that lets a command write over its earlier outputs."""

from __future__ import annotations

import argparse


def add_exist_ok_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--exist-ok``: write over ``what`` where an earlier run left it (refused otherwise)."""
    parser.add_argument(
        "--exist-ok",
        action="store_true",
        help=f"write over {what} left by an earlier run (without it, that is an error)",
    )
