"""Suggestions for mistyped names."""

from __future__ import annotations

import difflib


def did_you_mean(value: str, choices: list[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest of ``choices``, or "" when none is close."""
    close = difflib.get_close_matches(value, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
