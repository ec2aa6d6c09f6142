"""Real training on a slice of FER2013 with the FER+ crowd votes: the vote distribution trains a
model that clearly beats the crowd's majority class on val."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ferlab import train

pytestmark = pytest.mark.slow


def test_short_training_on_votes_beats_the_majority_class(
    fer2013_dir: Path, tmp_path: Path
) -> None:
    votes = fer2013_dir / "ferplus.csv"
    if not votes.is_file():
        pytest.skip(f"FER+ votes not found at {votes}")
    result = train(
        data=str(fer2013_dir),
        labels=str(votes),
        label_mode="distribution",
        model="mobilenet_v2",
        input_size=64,
        backbone_lr_factor=0.5,
        epochs=2,
        limit=2000,
        batch_size=64,
        runs_dir=str(tmp_path / "runs"),
    )
    spec = torch.load(result.model_file, weights_only=True)["spec"]
    assert spec["classes"][-1] == "contempt" and len(spec["classes"]) == 8
    assert (spec["label_source"], spec["label_mode"]) == (str(votes), "distribution")
    prior = dict(zip(spec["classes"], spec["class_prior"], strict=True))
    assert max(prior, key=prior.__getitem__) == "neutral"
    majority = 1334 / 3549  # neutral majorities on val, unknown/NF majorities left out
    assert result.best_val_acc is not None
    assert result.best_val_acc >= majority + 0.05, result.best_val_acc
