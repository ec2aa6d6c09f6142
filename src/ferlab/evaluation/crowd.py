"""How well a model's probabilities match a crowd's votes, and how often it gives each answer."""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-12


def crowd_metrics(probs: np.ndarray, votes: np.ndarray) -> dict[str, float]:
    """Mean KL divergence KL(votes ‖ probs) from each face's vote distribution to the model's
    probabilities (nats; 0 log 0 = 0), and the share of faces whose predicted class got at least
    one vote. ``votes``: (N, K) counts or shares over the same classes as ``probs``."""
    dist = votes / votes.sum(axis=1, keepdims=True)
    safe = np.clip(probs, EPS, None)
    terms = np.where(dist > 0, dist * (np.log(np.clip(dist, EPS, None)) - np.log(safe)), 0.0)
    predicted = probs.argmax(axis=1)
    voted = votes[np.arange(len(votes)), predicted] > 0
    return {
        "kl_divergence": float(terms.sum(axis=1).mean()) if len(votes) else float("nan"),
        "predicted_class_voted": float(voted.mean()) if len(votes) else float("nan"),
    }


def answer_shares(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Per class: the share of faces the model answers with it and the share labelled with it."""
    total = max(1, len(labels))
    predicted = np.bincount(probs.argmax(axis=1), minlength=len(classes)) / total
    labelled = np.bincount(labels, minlength=len(classes)) / total
    return {
        name: {"predicted": float(predicted[k]), "labelled": float(labelled[k])}
        for k, name in enumerate(classes)
    }
