"""Evaluation against scikit-learn, class-set checks, and the CLI's output and error contract."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from conftest import RunsCode, make_pattern_tree
from ferlab import evaluate
from ferlab.cli import main
from ferlab.errors import DataError, ModelError
from ferlab.evaluation.metrics import classification_metrics, format_report
from ferlab.evaluation.plots import confident_mistakes


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    names = ["a", "b", "c", "d"]
    metrics = classification_metrics(y_true, probs, names)
    y_pred = probs.argmax(1)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert metrics["majority_accuracy"] == pytest.approx(np.bincount(y_true).max() / 200)
    assert sum(metrics["per_class"][n]["support"] for n in names) == 200
    text = format_report(metrics)
    assert f"{metrics['accuracy']:.4f}" in text and "confusion matrix" in text


def test_evaluate_writes_metrics_json(pattern_run: Path, pattern_tree: Path) -> None:
    result = evaluate(pattern_run, pattern_tree, split="test")
    assert result.out_dir.parent == pattern_run and result.out_dir.name.startswith("eval-test")
    written = json.loads((result.out_dir / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert written["samples"] == 24
    assert written["classes"] == ["happy", "sad", "surprise"]
    assert result.metrics["accuracy"] > 0.8
    predicted = result.probs.argmax(1)
    assert written["confusion_matrix"] == confusion_matrix(result.labels, predicted).tolist()
    with (pattern_run / "eval-test" / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and {row["true"] for row in rows} == {"happy", "sad", "surprise"}
    for row in rows:
        assert Path(row["path"]).parent.name == row["true"]
        probs = {name: float(row[f"p_{name}"]) for name in written["classes"]}
        assert row["predicted"] == max(probs, key=probs.__getitem__)
        assert row["correct"] == str(int(row["predicted"] == row["true"]))
    correct = sum(int(row["correct"]) for row in rows)
    assert correct / 24 == pytest.approx(written["accuracy"])


def test_confident_mistakes_are_wrong_and_most_confident_first() -> None:
    labels = np.array([0, 1, 2, 0, 1])
    probs = np.array(
        [[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.15, 0.2, 0.65], [0.1, 0.9, 0.0]]
    )
    assert confident_mistakes(labels, probs).tolist() == [2, 3, 1]
    assert confident_mistakes(labels, probs, count=1).tolist() == [2]
    assert confident_mistakes(labels[[0, 4]], probs[[0, 4]]).tolist() == []


def test_evaluate_on_data_with_other_classes(pattern_run: Path, tmp_path: Path) -> None:
    other = make_pattern_tree(tmp_path / "other", {"train": 2, "test": 2}, ("happy", "sad", "fear"))
    with pytest.raises(DataError, match=r"classes the model does not know \(fear\)"):
        evaluate(pattern_run, other)
    result = evaluate(pattern_run, other, keep="happy,sad", out=tmp_path / "out")
    assert result.metrics["samples"] == 4
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_evaluate_refuses_what_is_not_a_model(tmp_path: Path, pattern_tree: Path) -> None:
    with pytest.raises(ModelError, match="no such run folder or model file"):
        evaluate(tmp_path / "nothing", pattern_tree)
    with pytest.raises(ModelError, match=r"run folder has no model\.pt"):
        evaluate(tmp_path, pattern_tree)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"junk\.pt: not a readable model file"):
        evaluate(junk, pattern_tree)


def test_cli_evaluate_prints_report(
    pattern_run: Path, pattern_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(pattern_run), "--data", str(pattern_tree)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "macro-F1" in out and "surprise" in out
    assert "metrics.json" in out


def test_cli_evaluate_defaults_to_the_data_the_run_trained_on(
    pattern_run: Path, pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(pattern_run), "--out", str(tmp_path / "report")]) == 0
    assert f"on {pattern_tree} [test]" in capsys.readouterr().out
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["data"] == str(pattern_tree) and written["samples"] == 24


def test_cli_evaluate_says_when_it_scores_a_drawn_share_of_the_data(
    pattern_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = make_pattern_tree(tmp_path / "flat", {"": 20})  # <class>/<image>: no fixed splits
    argv = ["evaluate", str(pattern_model), "--data", str(flat), "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        f"data: {flat} has no fixed splits: 'test' is the share drawn as the model's training "
        "drew it (seed 0, val 0.1, test 0.1), 6 of its 60 images"
    ) in out
    assert "has no fixed splits" in (tmp_path / "r" / "report.md").read_text()
    every = tmp_path / "every"
    assert main([*argv[:4], "--split", "all", "--out", str(every)]) == 0
    out = capsys.readouterr().out
    assert f"'all' scores every image of {flat}, no split drawn" in out
    assert json.loads((every / "metrics.json").read_text())["samples"] == 60
    with (every / "predictions.csv").open(newline="") as handle:
        scored = sorted(row["path"] for row in csv.DictReader(handle))
    assert scored == sorted(str(path) for path in flat.rglob("*.png"))
    tested = make_pattern_tree(tmp_path / "tested", {"test": 4})  # test/ alone: no train/
    argv = [*argv[:2], "--data", str(tested), "--split", "all", "--out", str(every / "t")]
    assert main(argv) == 0
    assert json.loads((every / "t" / "metrics.json").read_text())["samples"] == 12


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "/no/where", "--model", "baseline_cnn"], "/no/where"),
        (["train", "--data", ".", "--model", "nope"], "unknown model 'nope'"),
        (["train", "--data", ".", "--epochs", "many"], "--epochs: invalid int value"),
        (["train", "--config", "/no/config.yaml"], "/no/config.yaml: config file not found"),
        (["evaluate", "/no/run", "--data", "."], "/no/run: no such run folder or model file"),
        (
            ["evaluate", "/no/model.onnx", "--data", "."],
            "/no/model.onnx: no such run folder or model file",
        ),
        (["evaluate", "default"], "not in a run folder, so no training data comes with it"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    process = subprocess.run(
        [sys.executable, "-m", "ferlab", *argv], capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("ferlab: error: ") and message in lines[0]
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_models_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines[: lines.index("")]) == 14  # the header and 13 models, then their weights
    mobilenet = next(line for line in lines if line.startswith("mobilenet_v2 "))
    assert "2.23M" in mobilenet and " 96 " in mobilenet
    shipped = lines[lines.index(next(line for line in lines if line.startswith("Trained"))) :]
    assert [line.split()[0] for line in shipped[1:]] == ["fer2013", "ferplus"]
    assert "(default)" in shipped[1] and "8 classes" in shipped[2]


def test_a_reader_that_leaves_stops_a_command_quietly() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ferlab", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `| head -0` does
    assert process.wait(timeout=300) == 141
    assert process.stderr.read() == b""


def test_model_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    import torch

    from ferlab.models.artifact import load_model_file

    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "ferlab-model", "payload": RunsCode(marker)}, bad)
    with pytest.raises(ModelError, match=r"evil\.pt: refused"):
        load_model_file(bad)
    assert not marker.exists()


def test_evaluate_tta_outside_a_run_folder(
    pattern_run: Path,
    pattern_tree: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    import torch

    from ferlab.evaluation.evaluate import predict_probs
    from ferlab.models.artifact import load_model_file

    loose = tmp_path / "models" / "mine.pt"
    loose.parent.mkdir()
    shutil.copy(pattern_run / "model.pt", loose)
    monkeypatch.chdir(tmp_path)
    result = evaluate(loose, pattern_tree, split="test", tta=True)
    assert result.out_dir == Path("evaluations/mine-test")
    assert (
        json.loads((tmp_path / "evaluations/mine-test/metrics.json").read_text())["tta"] == "flip"
    )
    bundle = load_model_file(loose)
    images = torch.stack([torch.zeros(1, 48, 48, dtype=torch.uint8)] * 2)
    images[0, 0, :, :24] = 200
    mirrored = images.flip(-1)
    both = predict_probs(bundle, images, tta=True)
    expected = (predict_probs(bundle, images) + predict_probs(bundle, mirrored)) / 2
    np.testing.assert_allclose(both, expected, atol=1e-6)
    assert not np.allclose(predict_probs(bundle, images)[0], expected[0], atol=1e-4)
    shifted = [images[:, :, :, :1].expand(-1, -1, -1, 3), images]  # by hand: 3 px, edges repeated
    views = [
        images,
        torch.cat(shifted, dim=3)[:, :, :, :48],  # content moved right
        torch.cat([images, images[:, :, :, -1:].expand(-1, -1, -1, 3)], dim=3)[:, :, :, 3:],
        torch.cat([images, images[:, :, -1:].expand(-1, -1, 3, -1)], dim=2)[:, :, 3:],
        torch.cat([images[:, :, :1].expand(-1, -1, 3, -1), images], dim=2)[:, :, :48],
    ]
    views += [view.flip(-1) for view in views]
    expected = np.mean([predict_probs(bundle, view) for view in views], axis=0)
    np.testing.assert_allclose(predict_probs(bundle, images, tta="shift"), expected, atol=1e-6)
    capsys.readouterr()
    argv = ["evaluate", str(loose), "--data", str(pattern_tree), "--tta", "shift"]
    assert main([*argv, "--out", str(tmp_path / "shift")]) == 0
    assert capsys.readouterr().out.startswith(f"{loose} (torch, shift TTA) on {pattern_tree}")
    assert json.loads((tmp_path / "shift/metrics.json").read_text())["tta"] == "shift"


def test_evaluate_and_compare_onnx_exports(
    pattern_run: Path, pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export scores as its model file does, on the split and classes its metadata records."""
    from ferlab.inference.onnx_runner import OnnxModel
    from ferlab.models.artifact import load_model_file

    fp32, int8 = tmp_path / "model.onnx", tmp_path / "int8.onnx"
    assert main(["export", str(pattern_run), "--format", "onnx", "--out", str(fp32)]) == 0
    argv = ["export", str(pattern_run), "--format", "onnx", "--quantize", "int8"]
    assert main([*argv, "--out", str(int8)]) == 0
    capsys.readouterr()
    for wrong in ("model.pt", "model.txt", "folder"):
        (tmp_path / "folder.onnx").mkdir(exist_ok=True)
        assert main([*argv, "--out", str(tmp_path / wrong)]) == 2
        assert "--out must be a file name ending in .onnx" in capsys.readouterr().err
        assert not (tmp_path / wrong).exists()
    assert main([*argv, "--out", str(tmp_path / "folder.onnx"), "--exist-ok"]) == 2
    assert "folder.onnx: a folder; --out names the .onnx file" in capsys.readouterr().err
    trained = load_model_file(pattern_run / "model.pt").spec
    assert OnnxModel(fp32).spec == trained.for_export()
    reference = evaluate(pattern_run, pattern_tree, out=tmp_path / "torch")
    exported = evaluate(OnnxModel(fp32), pattern_tree, out=tmp_path / "fp32")
    np.testing.assert_allclose(exported.probs, reference.probs, atol=1e-4)
    assert np.array_equal(exported.labels, reference.labels)
    for key in ("accuracy", "macro_f1", "confusion_matrix"):
        assert exported.metrics[key] == reference.metrics[key]
    assert (reference.metrics["runtime"], exported.metrics["runtime"]) == ("torch", "onnxruntime")
    report = (tmp_path / "fp32" / "report.md").read_text()
    assert "Grad-CAM: needs a PyTorch model file; model.onnx runs on onnxruntime" in report
    assert "gradcam.png" not in report and (tmp_path / "torch" / "plots" / "gradcam.png").is_file()
    capsys.readouterr()
    out_dir = tmp_path / "int8-eval"
    argv = ["evaluate", str(int8), "--data", str(pattern_tree), "--out", str(out_dir)]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(
        f"{int8} (onnxruntime int8) on {pattern_tree} [test]\nsamples      24\n"
    )
    assert json.loads((out_dir / "metrics.json").read_text())["runtime"] == "onnxruntime int8"
    argv = ["compare", str(pattern_run), str(fp32), "--data", str(pattern_tree)]
    assert main([*argv, "--out", str(tmp_path / "compare")]) == 0
    table = capsys.readouterr().out
    assert f"| {fp32} | baseline_cnn (onnxruntime) | {reference.metrics['accuracy']:.4f} |" in table
    assert f"| {pattern_run} | {fp32} | 24 | 0 | 0 | exact | 1 | no |" in table
