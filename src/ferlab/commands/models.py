"""``ferlab models``: the model registry."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("models", help="list the model registry")
    parser.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from ferlab.models.summary import registry_table

    for row in registry_table():
        print(row)
    return 0
