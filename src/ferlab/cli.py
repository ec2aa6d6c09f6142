"""The ``ferlab`` command: one verb per job, each in ``ferlab.commands``.

The commands only parse arguments and call the Python API that users import.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import signal
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import Any

from ferlab.commands.completion import add_completion_parser
from ferlab.errors import FerlabError, os_error_line
from ferlab.names import printable
from ferlab.progress import shown
from ferlab.signals import Stopped, raise_stopped
from ferlab.suggest import did_you_mean

COMMAND_MODULES = (  # ferlab.commands.<name>, each with add_parser(subparsers); in --help order,
    # then "completion", which prints a script made from the whole parser
    "train",
    "evaluate",
    "models",
    "predict",
    "video",
    "webcam",
    "export",
    "ensemble",
    "explain",
    "compare",
    "data",
    "serve",
)


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), like every other ferlab error, with the
    closest choice or flag suggested for a mistyped one."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"ferlab: error: {message} (see '{self.prog} --help')\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's check of a choice (command names included); Python 3.14's suggest_on_error
        # does the same, from 3.14 on only.
        if action.choices is None or value in action.choices:
            return
        choices = [str(choice) for choice in action.choices]
        message = f"invalid choice: '{value}'{did_you_mean(str(value), choices)}"
        raise argparse.ArgumentError(action, f"{message} (choose from {', '.join(choices)})")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _command_parser(self, parsed)
            flags = [flag for flag in command._option_string_actions if flag.startswith("--")]
            hint = did_you_mean(extras[0].split("=")[0], flags) if extras[0][:2] == "--" else ""
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The (sub-)command parser that ``args`` were parsed by, deepest first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None))
            if chosen is not None:
                return _command_parser(chosen, args)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="ferlab", description="Facial expression recognition.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ferlab.commands.{name}").add_parser(commands)
    add_completion_parser(commands, parser)
    return parser


def _version() -> str:
    from ferlab import __version__

    return f"ferlab {__version__}"


def _one_line_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> str:
    return f"ferlab: warning: {str(message).splitlines()[0]}\n"


def _name_safe_streams() -> None:
    """File names with bytes that are not UTF-8 come back to stdout as the same bytes, and to
    stderr escaped, whatever the locale: printing a result never fails on its file's name."""
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; user errors become one line on stderr and exit code 2,
    SIGINT and SIGTERM one line and 130 or 143; progress bars on stderr unless ``--quiet``."""
    _name_safe_streams()
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        with shown(not getattr(args, "quiet", False)):
            return args.handler(args)
    except FerlabError as exc:
        print(f"ferlab: error: {printable(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader left (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a read-only or full disk, a file where a folder should be, ...
        print(f"ferlab: error: {printable(os_error_line(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferlab: interrupted", file=sys.stderr)
        return 130
    except Stopped as exc:
        print(f"ferlab: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
