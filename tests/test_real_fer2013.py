"""Real training on a slice of FER2013: ImageNet MobileNetV2 clearly beats the majority class,
and its evaluation report renders in headless Chromium with every plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import needs_chromium, render_report_in_chromium
from ferlab import evaluate, train
from ferlab.evaluation.evaluate import EvaluationResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def val_report(fer2013_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    result = train(
        data=str(fer2013_dir),
        model="mobilenet_v2",
        strategy="finetune",
        input_size=64,
        backbone_lr_factor=0.5,
        epochs=2,
        limit_per_class=300,
        batch_size=64,
        runs_dir=str(tmp_path_factory.mktemp("runs")),
    )
    report = evaluate(result.run_dir, fer2013_dir, split="val")
    report.metrics["best_val_acc"] = result.best_val_acc
    return report


def test_short_training_beats_majority_by_five_points(val_report: EvaluationResult) -> None:
    metrics = val_report.metrics
    assert metrics["samples"] == 3589
    assert metrics["majority_accuracy"] == pytest.approx(895 / 3589)
    assert metrics["accuracy"] >= metrics["majority_accuracy"] + 0.05, metrics["accuracy"]
    assert metrics["best_val_acc"] == pytest.approx(metrics["accuracy"], abs=1e-4)


@needs_chromium
def test_report_of_a_real_model_renders_with_all_plots(
    val_report: EvaluationResult, tmp_path: Path
) -> None:
    render_report_in_chromium(val_report.report, tmp_path, images=7)
