"""``--prior-tau τ``: divide a model's probabilities by its training class prior to the power τ."""

from __future__ import annotations

import argparse


def _tau(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 2], got '{text}'") from None
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 2], got {text}")
    return value


def add_prior_tau_option(parser: argparse.ArgumentParser) -> None:
    """``--prior-tau τ``; unset: as the model file says (0 where it says nothing)."""
    parser.add_argument(
        "--prior-tau",
        type=_tau,
        metavar="TAU",
        help="divide the probabilities by the model's training class prior^TAU and renormalise "
        "(0: off, 1: the prior removed, at most 2); default: as the model file says",
    )
