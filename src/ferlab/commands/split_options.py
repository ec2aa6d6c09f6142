"""``--data``, ``--split`` and ``--on-bad-file``: the labelled images that evaluate and compare
score a model on."""

from __future__ import annotations

import argparse

from ferlab.commands.train import FLAG_HELP
from ferlab.config import BAD_FILE_MODES


def add_split_options(
    parser: argparse.ArgumentParser, data_help: str | None = None, *, every: bool = False
) -> None:
    """``--data PATH`` (required unless ``data_help`` says what it defaults to), ``--split``
    (test; with ``every``, also ``all``: every image) and ``--on-bad-file`` (skip)."""
    parser.add_argument(
        "--data",
        required=data_help is None,
        metavar="PATH",
        help=FLAG_HELP["data"] + (f" ({data_help})" if data_help else ""),
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", *(["all"] if every else [])],
        help="the split to score (default: test)"
        + ("; all: every image, for a model that did not train on this data" if every else ""),
    )
    parser.add_argument(
        "--on-bad-file",
        choices=BAD_FILE_MODES,
        default="skip",
        help="unreadable images: skip them, or stop with an error (default: skip)",
    )
