"""The ``ferlab`` command: one verb per job, each in ``ferlab.commands``.

The commands only parse arguments and call the Python API that users import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import Any

from ferlab.errors import FerlabError, os_error_line

COMMAND_MODULES = (  # ferlab.commands.<name>, each with add_parser(subparsers); in --help order
    "train",
    "evaluate",
    "models",
    "predict",
    "video",
    "webcam",
    "export",
    "explain",
    "compare",
    "data",
    "serve",
)


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), like every other ferlab error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"ferlab: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="ferlab", description="Facial expression recognition.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ferlab.commands.{name}").add_parser(commands)
    return parser


def _version() -> str:
    from ferlab import __version__

    return f"ferlab {__version__}"


def _one_line_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> str:
    return f"ferlab: warning: {str(message).splitlines()[0]}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return args.handler(args)
    except FerlabError as exc:
        print(f"ferlab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk, a file where a folder should be, ...
        print(f"ferlab: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
