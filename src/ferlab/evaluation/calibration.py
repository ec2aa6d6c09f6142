"""Confidence calibration: reliability bins, expected calibration error, temperature scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

# Temperatures searched by fit_temperature, as a range of log T.
_LOG_T_RANGE = (np.log(0.05), np.log(20.0))


@dataclass
class ReliabilityBins:
    """Equal-width bins of top-class confidence; accuracy and confidence are NaN in empty bins."""

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> ReliabilityBins:
    """Bin samples by max probability into ``bins`` equal-width bins (i/bins, (i+1)/bins]."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), counts, accuracy, mean_conf)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over bins of (share of samples) × |accuracy − mean confidence|."""
    table = reliability_bins(probs, labels, bins)
    filled = table.counts > 0
    gaps = np.abs(table.accuracy[filled] - table.confidence[filled])
    return float(np.sum(table.counts[filled] * gaps) / max(1, table.counts.sum()))


def probs_to_logits(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities, usable as logits (softmax is unchanged by a constant per row)."""
    return np.log(np.clip(probs, 1e-12, None))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of ``logits / temperature``."""
    return softmax(logits / temperature, axis=1)


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean NLL of the true labels under softmax(logits / temperature)."""
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T in [0.05, 20] that minimises the NLL of softmax(logits / T) on ``labels``.

    Fit it on a validation split, never on the split that is then scored.
    """
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=_LOG_T_RANGE,
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))
