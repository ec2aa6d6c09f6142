"""Prior-aware probabilities: divide a model's probabilities by its training class prior^τ.

A model trained on data where one class dominates (FER+'s crowd answers "neutral" for a third of
the faces) learns that share as a prior. Dividing the probabilities by ``prior ** tau`` and
renormalising (logit adjustment) takes ``tau`` of it back out: 0 leaves them as they are, 1
removes the prior fully.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ferlab.errors import ConfigError, ModelError

MAX_PRIOR_TAU = 2.0


def check_prior_tau(tau: float) -> float:
    """``tau`` (a real number, not text or a bool) as a float in [0, MAX_PRIOR_TAU], or
    ConfigError."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise ConfigError(
            f"prior-tau must be a number in [0, {MAX_PRIOR_TAU:g}], got {type(tau).__name__} "
            f"{tau!r}"
        )
    value = float(tau)
    if not 0.0 <= value <= MAX_PRIOR_TAU:
        raise ConfigError(f"prior-tau must be in [0, {MAX_PRIOR_TAU:g}], got {tau}")
    return value


def recorded_prior(values: Sequence[Any] | None, classes: Sequence[str], where: str) -> np.ndarray:
    """A recorded training class prior, checked: one positive finite share per class,
    normalised; ModelError naming ``where`` otherwise (None: the model records none)."""
    if values is None:
        raise ModelError(
            f"{where}: the model records no training class prior, so --prior-tau cannot apply "
            "(models trained by this ferlab record one)"
        )
    prior = checked_shares(values, where)
    if len(prior) != len(classes):
        raise ModelError(
            f"{where}: spec.class_prior: {len(prior)} positive shares for {len(classes)} classes"
        )
    return prior


def checked_shares(values: Any, where: str) -> np.ndarray:
    """``values`` (a list of finite positive numbers) as shares that sum to 1; ModelError naming
    ``where`` and ``spec.class_prior`` otherwise."""
    if not isinstance(values, list | tuple | np.ndarray):
        raise ModelError(f"{where}: spec.class_prior is not a list of numbers")
    try:
        prior = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{where}: spec.class_prior is not a list of numbers") from None
    bad = next((p for p in prior if not (math.isfinite(p) and p > 0)), None)
    if bad is not None or not len(prior):
        shown = "is empty" if bad is None else f"{bad:g} is not finite and positive"
        raise ModelError(f"{where}: spec.class_prior: {shown}; expected positive shares")
    prior = prior / prior.max()  # in range first: shares of 1e308 would sum to infinity
    return prior / prior.sum()


def prior_adjusted(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """``probs / prior**tau``, renormalised per row; ``probs`` unchanged for ``tau == 0``."""
    if tau == 0:
        return probs
    weighted = probs * np.power(prior, -tau)[None, :]
    return (weighted / weighted.sum(axis=1, keepdims=True)).astype(probs.dtype)
