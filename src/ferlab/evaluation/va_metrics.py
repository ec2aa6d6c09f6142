"""Valence and arousal metrics as affective-computing papers report them.

Per dimension: RMSE, MAE and R² (scikit-learn), Pearson's correlation CORR (scipy), SAGR (the
share of samples whose prediction has the sign of the truth, ``sign(0) = 0``) and CCC (Lin's
concordance correlation coefficient with population moments, as EmoNet computes it). Samples
without a true value (NaN) are left out of that dimension. Undefined values (a correlation of a
constant series, R² of fewer than two samples) are None.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.stats import ConstantInputWarning, pearsonr
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

VA_DIMENSIONS = ("valence", "arousal")
VA_METRICS = ("rmse", "corr", "sagr", "ccc", "mae", "r2")
VA_LABELS = {
    "rmse": "RMSE",
    "corr": "CORR",
    "sagr": "SAGR",
    "ccc": "CCC",
    "mae": "MAE",
    "r2": "R²",
    "samples": "samples",
}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def sagr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Sign agreement: mean of ``sign(y_true) == sign(y_pred)``."""
    return float(np.mean(np.sign(y_true) == np.sign(y_pred)))


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """Pearson's r; None for fewer than two samples or a constant series."""
    if len(y_true) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # undefined is None here
        return _finite(pearsonr(y_true, y_pred).statistic)


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """Lin's CCC: ``2 cov / (var_true + var_pred + (mean_true - mean_pred)^2)``, population
    moments; None where the denominator is 0 (both series the same constant) or no samples."""
    if len(y_true) == 0:
        return None
    true_mean, pred_mean = float(np.mean(y_true)), float(np.mean(y_pred))
    covariance = float(np.mean((y_true - true_mean) * (y_pred - pred_mean)))
    denominator = float(np.var(y_true) + np.var(y_pred)) + (true_mean - pred_mean) ** 2
    return 2 * covariance / denominator if denominator > 0 else None


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """RMSE, CORR, SAGR, CCC, MAE, R² and the sample count of one dimension."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if len(y_true) == 0:
        return {"samples": 0, **dict.fromkeys(VA_METRICS)}
    r2 = None
    if len(y_true) > 1 and np.ptp(y_true) > 0:
        r2 = float(r2_score(y_true, y_pred))
    return {
        "samples": len(y_true),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "corr": pearson(y_true, y_pred),
        "sagr": sagr(y_true, y_pred),
        "ccc": ccc(y_true, y_pred),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": r2,
    }


def va_metrics(va_true: np.ndarray, va_pred: np.ndarray) -> dict[str, dict[str, Any]]:
    """Metrics per dimension from (N, 2) valence/arousal arrays; NaN truths are left out."""
    out = {}
    for k, name in enumerate(VA_DIMENSIONS):
        present = ~np.isnan(va_true[:, k])
        out[name] = regression_metrics(va_true[present, k], va_pred[present, k])
    return out


def format_va(section: dict[str, dict[str, Any]]) -> list[str]:
    """Plain-text lines: one header and one row per dimension."""
    columns = ["samples", *VA_METRICS]
    lines = [f"{'':<10}" + "".join(f"{VA_LABELS[c]:>9}" for c in columns)]
    for name in VA_DIMENSIONS:
        row = section[name]
        cells = [f"{row['samples']:>9d}"]
        cells += [f"{'n/a':>9}" if row[c] is None else f"{row[c]:>9.4f}" for c in VA_METRICS]
        lines.append(f"{name:<10}" + "".join(cells))
    return lines
