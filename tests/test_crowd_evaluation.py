"""Evaluation against crowd votes and prior-aware probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PATTERN_CLASSES, make_pattern_tree
from ferlab import evaluate
from ferlab.cli import main
from ferlab.errors import ConfigError, ModelError
from ferlab.evaluation.crowd import answer_shares, crowd_metrics
from ferlab.models.prior import check_prior_tau, prior_adjusted, recorded_prior


def test_prior_adjustment_against_hand_computed_values() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    prior = np.array([0.5, 0.25, 0.25])
    adjusted = prior_adjusted(probs, prior, 1.0)
    # row 0: (0.6/0.5, 0.3/0.25, 0.1/0.25) = (1.2, 1.2, 0.4) → /2.8
    np.testing.assert_allclose(adjusted[0], [1.2 / 2.8, 1.2 / 2.8, 0.4 / 2.8])
    # tau 0.5: divide by sqrt(prior): (0.6/0.7071, 0.3/0.5, 0.1/0.5) = (0.8485, 0.6, 0.2)
    half = prior_adjusted(probs, prior, 0.5)
    np.testing.assert_allclose(half[0], np.array([0.84853, 0.6, 0.2]) / 1.64853, rtol=1e-4)
    assert prior_adjusted(probs, prior, 0.0) is probs
    with pytest.raises(ConfigError, match="prior-tau"):
        check_prior_tau(-0.1)


def test_recorded_prior_is_checked() -> None:
    classes = ["a", "b"]
    np.testing.assert_allclose(recorded_prior([3, 1], classes, "m"), [0.75, 0.25])
    for values, message in [
        (None, "records no training class prior"),
        ([1, 0], "positive shares"),
        ([1, 2, 3], "positive shares"),
        (["x", 1], "not a list of numbers"),
    ]:
        with pytest.raises(ModelError, match=message):
            recorded_prior(values, classes, "m.pt")


def test_crowd_metrics_against_hand_computed_values() -> None:
    votes = np.array([[8.0, 2.0, 0.0], [0.0, 5.0, 5.0]])
    probs = np.array([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]])
    metrics = crowd_metrics(probs, votes)
    kl0 = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.25)
    kl1 = 2 * 0.5 * math.log(0.5 / 0.05)
    assert metrics["kl_divergence"] == pytest.approx((kl0 + kl1) / 2)
    assert metrics["predicted_class_voted"] == 0.5  # face 1's answer got no vote
    shares = answer_shares(np.array([0, 1]), probs, ["a", "b", "c"])
    assert shares["a"] == {"predicted": 1.0, "labelled": 0.5}


@pytest.fixture(scope="module")
def voted_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The pattern classes plus votes over them and a fourth class, 'neutral', that the model
    lacks: test images 000-001 of each class have a neutral majority, the rest agree."""
    root = make_pattern_tree(tmp_path_factory.mktemp("voted"), {"train": 4, "val": 8, "test": 8})
    header = "file,happiness,sadness,surprise,neutral,unknown"
    rows = [header]
    for image in sorted(root.glob("*/*/*.png")):
        rel = image.relative_to(root).as_posix()
        counts = [0, 0, 0, 0, 0]
        counts[PATTERN_CLASSES.index(image.parent.name)] = 6
        counts[3] = 7 if image.stem in ("000", "001") else 1
        counts[4] = 1
        rows.append(f"{rel},{','.join(map(str, counts))}")
    votes = root / "votes.csv"
    votes.write_text("\n".join(rows) + "\n")
    return root, votes


def test_evaluate_against_votes_leaves_out_classes_the_model_lacks(
    pattern_run: Path, voted_tree: tuple[Path, Path], tmp_path: Path
) -> None:
    root, votes = voted_tree
    result = evaluate(pattern_run, root, labels=votes, out=tmp_path / "eval")
    metrics = result.metrics
    assert metrics["samples"] == 3 * 6  # 2 of 8 per class have a neutral majority
    assert metrics["unanswerable_classes"] == ["neutral"]
    assert metrics["classes"] == list(PATTERN_CLASSES)
    assert metrics["accuracy"] > 0.8
    crowd = metrics["crowd"]
    assert 0 <= crowd["predicted_class_voted"] <= 1 and crowd["kl_divergence"] > 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["crowd"] == crowd


def test_model_classes_the_data_cannot_label_are_renormalised_away(
    pattern_run: Path, tmp_path: Path
) -> None:
    two = make_pattern_tree(
        tmp_path / "two", {"train": 2, "val": 4, "test": 6}, PATTERN_CLASSES[:2]
    )
    result = evaluate(pattern_run, two, out=tmp_path / "eval")
    assert result.metrics["classes"] == ["happy", "sad"]
    assert result.metrics["unscored_model_classes"] == ["surprise"]
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, rtol=1e-5)


def test_prior_tau_divides_by_the_recorded_prior(
    pattern_run: Path, pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = evaluate(pattern_run, pattern_tree, out=tmp_path / "plain", tta="none")
    payload = torch.load(pattern_run / "model.pt", weights_only=True)
    prior = recorded_prior(payload["spec"]["class_prior"], payload["spec"]["classes"], "model.pt")
    adjusted = evaluate(pattern_run, pattern_tree, out=tmp_path / "a", tta="none", prior_tau=1.0)
    assert adjusted.metrics["prior_tau"] == 1.0
    np.testing.assert_allclose(adjusted.probs, prior_adjusted(plain.probs, prior, 1.0), rtol=1e-4)
    bare = tmp_path / "bare.pt"
    payload["spec"].pop("class_prior")
    torch.save(payload, bare)
    code = main(["evaluate", str(bare), "--data", str(pattern_tree), "--prior-tau", "0.5"])
    assert code == 2
    assert "records no training class prior" in capsys.readouterr().err


def test_recognizer_applies_the_prior_on_both_runtimes(pattern_run: Path, tmp_path: Path) -> None:
    from ferlab import Recognizer
    from ferlab.inference.onnx_export import export_onnx
    from ferlab.inference.onnx_runner import OnnxModel
    from ferlab.models.artifact import load_model_file

    face = np.full((48, 48, 3), 40, np.uint8)
    face[:24] = 200
    plain = Recognizer.load(pattern_run, detect=False, tta="none").predict(face)[0]
    bundle = load_model_file(pattern_run / "model.pt")
    prior = bundle.spec.prior("model.pt")
    expected = prior_adjusted(np.array([list(plain.probs.values())]), prior, 0.5)[0]
    onnx_file = tmp_path / "model.onnx"
    export_onnx(pattern_run, onnx_file)
    assert OnnxModel(onnx_file).spec.class_prior == bundle.spec.class_prior
    for ref in (pattern_run, onnx_file):
        adjusted = Recognizer.load(ref, detect=False, tta="none", prior_tau=0.5).predict(face)[0]
        np.testing.assert_allclose(list(adjusted.probs.values()), expected, rtol=1e-3, atol=1e-5)


def test_service_takes_the_prior_tau(pattern_run: Path) -> None:
    from ferlab.apps.service import ModelService

    service = ModelService.load(pattern_run, prior_tau=0.5)
    assert service.recognizer.prior_tau == 0.5 and service.recognizer.prior is not None
    assert ModelService.load(pattern_run).recognizer.prior is None
