"""Evaluation metrics against scikit-learn, krippendorff and hand-computed cases; calibration;
the report's files, its numbers against metrics.json, and its rendering in headless Chromium."""

from __future__ import annotations

import html
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
    top_k_accuracy_score,
)
from sklearn.preprocessing import label_binarize

from conftest import make_pattern_tree, needs_chromium, render_report_in_chromium
from ferlab import evaluate
from ferlab.errors import DataError
from ferlab.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    probs_to_logits,
    reliability_bins,
)
from ferlab.evaluation.metrics import classification_metrics
from ferlab.evaluation.report import format_value, resolve_pointer

PLOTS_IN_A_RUN = 7  # confusion, ROC/PR, reliability, training curves, samples, mistakes, Grad-CAM


def test_metrics_match_scikit_learn_and_krippendorff() -> None:
    rng = np.random.default_rng(1)
    names = ["a", "b", "c", "d"]
    y_true = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300)
    probs[np.arange(150), y_true[:150]] += 1.0  # better than chance
    probs /= probs.sum(axis=1, keepdims=True)
    y_pred = probs.argmax(1)
    m = classification_metrics(y_true, probs, names)

    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["cohen_kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred))
    expected_alpha = krippendorff.alpha(
        reliability_data=np.stack([y_true, y_pred]), level_of_measurement="nominal"
    )
    assert m["krippendorff_alpha"] == pytest.approx(expected_alpha)
    assert m["roc_auc_macro"] == pytest.approx(
        roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    )
    onehot = label_binarize(y_true, classes=range(4))
    assert m["pr_auc_macro"] == pytest.approx(
        average_precision_score(onehot, probs, average="macro")
    )
    for k, name in enumerate(names):
        assert m["per_class"][name]["roc_auc"] == pytest.approx(
            roc_auc_score(y_true == k, probs[:, k])
        )
        assert m["per_class"][name]["pr_auc"] == pytest.approx(
            average_precision_score(y_true == k, probs[:, k])
        )
        assert m["per_class"][name]["support"] == int(np.sum(y_true == k))
    assert m["top2_accuracy"] == pytest.approx(top_k_accuracy_score(y_true, probs, k=2))
    assert 0.5 < m["accuracy"] < 1 and m["cohen_kappa"] > 0.3

    matrix = np.array(m["confusion_matrix"])
    off = [(matrix[i, j], i, j) for i in range(4) for j in range(4) if i != j]
    top = sorted(off, key=lambda c: -c[0])[:5]
    assert len(m["most_confused"]) == 5
    assert [c["count"] for c in m["most_confused"]] == [c[0] for c in top]
    for cell in m["most_confused"]:
        i, j = names.index(cell["true"]), names.index(cell["predicted"])
        assert cell["count"] == matrix[i, j]
        assert cell["rate"] == pytest.approx(matrix[i, j] / matrix[i].sum())


def test_aucs_leave_out_classes_absent_from_the_labels() -> None:
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 120)  # class "d" never occurs
    probs = rng.dirichlet(np.ones(4), 120)
    m = classification_metrics(y_true, probs, ["a", "b", "c", "d"])
    assert m["per_class"]["d"]["roc_auc"] is None and m["per_class"]["d"]["pr_auc"] is None
    rocs = [roc_auc_score(y_true == k, probs[:, k]) for k in range(3)]
    aps = [average_precision_score(y_true == k, probs[:, k]) for k in range(3)]
    assert m["roc_auc_macro"] == pytest.approx(np.mean(rocs))
    assert m["pr_auc_macro"] == pytest.approx(np.mean(aps))
    assert m["auc_note"] == "left out of roc_auc_macro and pr_auc_macro: d (absent)"
    assert m["balanced_accuracy"] == pytest.approx(
        np.mean([np.mean(probs[y_true == k].argmax(1) == k) for k in range(3)])
    )


def test_degenerate_agreement_is_none_not_nan() -> None:
    probs = np.tile([0.9, 0.1], (5, 1))
    m = classification_metrics(np.zeros(5, dtype=int), probs, ["a", "b"])
    assert m["accuracy"] == 1.0
    assert m["krippendorff_alpha"] is None and m["roc_auc_macro"] is None
    json.dumps(m, allow_nan=False)


def test_ece_on_constructed_cases() -> None:
    # 100 samples at confidence 0.9 of which 70 right (gap 0.2), 100 at 0.6 with 60 right (gap 0):
    # ECE = 0.5 * 0.2 + 0.5 * 0 = 0.1.
    probs = np.array([[0.9, 0.1]] * 100 + [[0.6, 0.4]] * 100)
    labels = np.array([0] * 70 + [1] * 30 + [0] * 60 + [1] * 40)
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.1)
    table = reliability_bins(probs, labels, bins=15)
    assert table.counts.sum() == 200 and np.count_nonzero(table.counts) == 2
    filled = table.counts > 0
    assert table.accuracy[filled] == pytest.approx([0.6, 0.7])
    assert table.confidence[filled] == pytest.approx([0.6, 0.9])
    # Perfectly calibrated: 0; always right at confidence 1: 0; always wrong at 1: 1.
    assert expected_calibration_error(probs[100:], labels[100:]) == pytest.approx(0.0)
    certain = np.array([[1.0, 0.0]] * 10)
    assert expected_calibration_error(certain, np.zeros(10, dtype=int)) == pytest.approx(0.0)
    assert expected_calibration_error(certain, np.ones(10, dtype=int)) == pytest.approx(1.0)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (20000, 5))
    true_temperature = 2.5  # the model's logits are 2.5x over-confident
    cumulative = softmax(logits / true_temperature, axis=1).cumsum(axis=1)
    labels = (rng.random((20000, 1)) > cumulative).sum(axis=1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert negative_log_likelihood(logits, labels, fitted) < negative_log_likelihood(logits, labels)
    # log-probabilities differ from logits by a constant per row: same temperature.
    from_probs = fit_temperature(probs_to_logits(softmax(logits, axis=1)), labels)
    assert from_probs == pytest.approx(fitted, rel=1e-3)
    before = expected_calibration_error(softmax(logits, axis=1), labels)
    after = expected_calibration_error(softmax(logits / fitted, axis=1), labels)
    assert after < before / 3


class _Cells(HTMLParser):
    """Collects (data-metric, text) of metric cells, bare <td> texts, and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[str, str]] = []
        self.bare_cells: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._open: tuple[str | None, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "td":
            self._open = (found.get("data-metric"), [])
        if tag == "img":
            self.images.append(found.get("src") or "")
        if tag in ("link", "script") and (found.get("href") or found.get("src")):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            pointer, text = self._open
            if pointer is None:
                self.bare_cells.append("".join(text))
            else:
                self.metrics.append((pointer, "".join(text)))
            self._open = None


def test_report_numbers_equal_metrics_json(pattern_run: Path, pattern_tree: Path) -> None:
    result = evaluate(pattern_run, pattern_tree, split="test")
    out = result.out_dir  # eval-test in the run, numbered if another test wrote one first
    assert out.parent == pattern_run and out.name.startswith("eval-test")
    written = json.loads((out / "metrics.json").read_text())
    assert result.report == out / "report.html"
    assert written["temperature"] > 0 and 0 <= written["ece_after_temperature"] <= 1
    assert "calibration_note" not in written

    cells = _Cells()
    cells.feed((out / "report.html").read_text())
    assert cells.bare_cells == []  # every value cell of every table is a metric cell
    classes = written["classes"]
    expected_cells = 17 + 6 * len(classes) + 4 * len(written["most_confused"]) + len(classes) ** 2
    assert len(cells.metrics) == expected_cells
    for pointer, text in cells.metrics:
        assert text == format_value(resolve_pointer(written, pointer)), pointer
    pointers = dict(cells.metrics)
    assert pointers["/accuracy"] == f"{written['accuracy']:.4f}"
    assert pointers["/per_class/happy/support"] == "8"

    assert len(cells.images) == PLOTS_IN_A_RUN and cells.external == []
    assert all(src.startswith("data:image/png;base64,") for src in cells.images)
    markdown = (out / "report.md").read_text()
    assert f"| accuracy | {format_value(written['accuracy'])} |" in markdown
    assert len(list((out / "plots").glob("*.png"))) == PLOTS_IN_A_RUN
    assert "![Training curves](plots/training_curves.png)" in markdown


def test_report_without_metrics_csv_or_run_folder(
    pattern_run: Path, pattern_tree: Path, tmp_path: Path
) -> None:
    bare_run = tmp_path / "run"
    bare_run.mkdir()
    for name in ("model.pt", "config.yaml"):
        shutil.copy(pattern_run / name, bare_run / name)
    evaluate(bare_run, pattern_tree)
    page = (bare_run / "eval-test" / "report.html").read_text()
    assert "training curves: no metrics.csv in the run" in page
    assert page.count("<img ") == PLOTS_IN_A_RUN - 1
    assert (
        "training curves: no metrics.csv in the run"
        in (bare_run / "eval-test" / "report.md").read_text()
    )

    loose = tmp_path / "loose" / "model.pt"
    loose.parent.mkdir()
    shutil.copy(pattern_run / "model.pt", loose)
    result = evaluate(loose, pattern_tree, out=tmp_path / "out")
    assert "training curves: the model is not in a run folder" in result.report.read_text()


def test_calibration_note_without_a_usable_val_split(pattern_run: Path, tmp_path: Path) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 2, "test": 3}, ("happy", "sad", "fear"))
    shutil.rmtree(data / "val", ignore_errors=True)
    (data / "val" / "fear").mkdir(parents=True)
    for i in range(2):
        shutil.copy(data / "train" / "fear" / f"{i:03d}.png", data / "val" / "fear" / f"{i}.png")
    with pytest.warns(UserWarning):
        result = evaluate(pattern_run, data, keep="happy,sad", out=tmp_path / "out")
    note = result.metrics["calibration_note"]
    assert note.startswith("no temperature fitted: ") and "'val' has no images" in note
    assert "temperature" not in result.metrics
    assert html.escape(note) in result.report.read_text()


def test_empty_split_is_a_data_error(pattern_run: Path, tmp_path: Path) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 2, "val": 2})
    for name in ("happy", "sad", "surprise"):
        (data / "test" / name).mkdir(parents=True)
    with pytest.raises(DataError, match="no samples in split 'test'"):
        evaluate(pattern_run, data, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_chromium
def test_report_renders_in_headless_chromium(
    pattern_run: Path, pattern_tree: Path, tmp_path: Path
) -> None:
    result = evaluate(pattern_run, pattern_tree, out=tmp_path / "eval")
    render_report_in_chromium(result.report, tmp_path, PLOTS_IN_A_RUN)
