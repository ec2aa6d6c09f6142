"""``ferlab completion``: a bash or zsh completion script, generated from the parser by shtab.

shtab writes a static script from the argparse parser, so pressing Tab runs no Python at all
(argcomplete would start ferlab on every Tab). Arguments that name files or folders complete
paths: the positional ones, and the options typed ``Path`` or shown as one of
:data:`PATH_METAVARS`.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

SHELLS = ("bash", "zsh")
DIR_METAVARS = {"DIR", "RUN_DIR"}
PATH_METAVARS = {"FILE", "PATH", "MODEL", *DIR_METAVARS}


def add_completion_parser(commands: Any, root: argparse.ArgumentParser) -> None:
    """The ``completion`` sub-command, which prints the script of ``root``, the whole parser."""
    parser = commands.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description="Print a shell completion script. bash: add "
        "'eval \"$(ferlab completion bash)\"' to ~/.bashrc; zsh: save it as _ferlab in a "
        "folder of $fpath.",
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.set_defaults(handler=functools.partial(_run_completion, root))


def completion_script(root: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``root`` for ``shell``; path arguments complete files."""
    import shtab

    for parser in _parsers(root):
        for action in parser._actions:
            if action.choices is not None or action.nargs == 0:
                continue
            shown = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            if shown in DIR_METAVARS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
            elif not action.option_strings or action.type is Path or shown in PATH_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(root, shell=shell)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


def _run_completion(root: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    print(completion_script(root, args.shell))
    return 0
