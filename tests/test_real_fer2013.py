"""Real training on a slice of FER2013: ImageNet MobileNetV2 clearly beats the majority class."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferlab import evaluate, train

pytestmark = pytest.mark.slow


def test_short_training_beats_majority_by_five_points(fer2013_dir: Path, tmp_path: Path) -> None:
    result = train(
        data=str(fer2013_dir),
        model="mobilenet_v2",
        strategy="finetune",
        input_size=64,
        backbone_lr_factor=0.5,
        epochs=2,
        limit_per_class=300,
        batch_size=64,
        runs_dir=str(tmp_path / "runs"),
    )
    report = evaluate(result.run_dir, fer2013_dir, split="val")
    metrics = report.metrics
    assert metrics["samples"] == 3589
    assert metrics["majority_accuracy"] == pytest.approx(895 / 3589)
    assert metrics["accuracy"] >= metrics["majority_accuracy"] + 0.05, metrics["accuracy"]
    assert result.best_val_acc == pytest.approx(metrics["accuracy"], abs=1e-4)
