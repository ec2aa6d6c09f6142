"""End to end on a generated AffectNet-layout set: a multi-task model learns expression, valence
and arousal from the pixels; evaluate, predict and the ONNX export all carry valence/arousal."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from affectnet_fixture import make_synthetic_affectnet
from conftest import quick_options
from ferlab import Recognizer, evaluate, train
from ferlab.cli import main
from ferlab.config import load_config
from ferlab.data.affectnet import EXCLUDED_CLASS, EXCLUDED_VA
from ferlab.evaluation.report import format_value, resolve_pointer
from ferlab.evaluation.va_metrics import ccc
from ferlab.inference.images import load_image
from ferlab.inference.onnx_export import export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.runner import TorchModel
from ferlab.models.artifact import load_model_file
from ferlab.training.run import TrainResult, prepare

CHANCE = 1 / 3


@pytest.fixture(scope="module")
def affectnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_affectnet(tmp_path_factory.mktemp("affectnet"))


@pytest.fixture(scope="module")
def trained(affectnet: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    options = quick_options(
        affectnet,
        tmp_path_factory.mktemp("runs"),
        head="multitask",
        epochs=8,
        batch_size=16,
        dropout=0.1,
        backbone_lr_factor=1.0,
        image_size=32,
        input_size=32,
    )
    return train(**options)


def test_training_learns_expression_valence_and_arousal(trained: TrainResult) -> None:
    best = trained.best_epoch
    assert best is not None
    print(
        f"best epoch {best['epoch']}: val accuracy {best['val_acc']}, "
        f"CCC valence {best['val_ccc_valence']}, arousal {best['val_ccc_arousal']}"
    )
    assert float(best["val_ccc_valence"]) > 0.8
    assert float(best["val_ccc_arousal"]) > 0.8
    assert trained.best_val_acc is not None and trained.best_val_acc > CHANCE + 0.4
    assert trained.best_val_acc == float(best["val_acc"])
    summary = json.loads((trained.run_dir / "run.json").read_text())
    assert summary["best_val_acc"] == trained.best_val_acc
    assert trained.data_note is not None
    assert f"excluded 2 ({EXCLUDED_CLASS}: 1, {EXCLUDED_VA}: 1)" in trained.data_note
    assert (
        "skipped 1" in trained.data_note and "missing annotation lost_val.npy" in trained.data_note
    )
    bundle = load_model_file(trained.model_file)
    assert bundle.va and bundle.head == "multitask"
    assert bundle.classes == ["happy", "sad", "neutral"]


def test_evaluate_reports_va_metrics_and_plots(trained: TrainResult, affectnet: Path) -> None:
    result = evaluate(trained.run_dir, affectnet, split="val")
    section = result.metrics["valence_arousal"]
    print(
        f"evaluate [val]: accuracy {result.metrics['accuracy']:.4f}, CCC valence "
        f"{section['valence']['ccc']:.4f}, arousal {section['arousal']['ccc']:.4f}"
    )
    assert section["valence"]["samples"] == section["arousal"]["samples"] == 60
    assert section["valence"]["ccc"] > 0.8 and section["arousal"]["ccc"] > 0.8
    assert section["valence"]["sagr"] > 0.8 and section["valence"]["rmse"] < 0.3
    assert result.metrics["accuracy"] > CHANCE + 0.4
    written = json.loads((result.out_dir / "metrics.json").read_text())
    assert written["valence_arousal"] == section
    page = (result.out_dir / "report.html").read_text()
    cells = re.findall(r'<td data-metric="([^"]+)">([^<]*)</td>', page)
    va_cells = [pointer for pointer, _ in cells if pointer.startswith("/valence_arousal/")]
    assert len(va_cells) == 2 * 7
    for pointer, text in cells:
        assert text == format_value(resolve_pointer(written, pointer)), pointer
    plots = {path.name for path in (result.out_dir / "plots").glob("*.png")}
    assert {"va_scatter.png", "circumplex.png"} <= plots
    markdown = (result.out_dir / "report.md").read_text()
    assert "## Valence and arousal" in markdown
    assert "![Valence-arousal plane, coloured by class](plots/circumplex.png)" in markdown
    assert "excluded 2" in written["data_note"]


def _val_truth(affectnet: Path) -> tuple[list[Path], np.ndarray]:
    folder = affectnet / "val_set"
    files = sorted((folder / "images").glob("*.jpg"))
    truth = [
        [float(np.load(folder / "annotations" / f"{f.stem}_{k}.npy")) for k in ("val", "aro")]
        for f in files
    ]
    return files, np.array(truth)


def test_recognizer_returns_valence_and_arousal(trained: TrainResult, affectnet: Path) -> None:
    files, truth = _val_truth(affectnet)
    recognizer = Recognizer.load(trained.run_dir, detect=False)
    assert recognizer.va
    faces = [found[0] for found in recognizer.predict_many(files)]
    predicted = np.array([[face.valence, face.arousal] for face in faces], dtype=float)
    assert ccc(truth[:, 0], predicted[:, 0]) > 0.8 and ccc(truth[:, 1], predicted[:, 1]) > 0.8
    record = faces[0].to_dict()
    assert record["valence"] == faces[0].valence and -1 <= record["arousal"] <= 1


def test_predict_cli_prints_valence_and_arousal(
    trained: TrainResult, affectnet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = _val_truth(affectnet)
    args = ["predict", str(files[0]), str(files[1]), "--model", str(trained.run_dir)]
    assert main([*args, "--no-detect", "--csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 2 and -1 <= float(rows[0]["valence"]) <= 1 and rows[1]["arousal"]
    assert main([*args, "--no-detect", "--json"]) == 0
    face = json.loads(capsys.readouterr().out)[0]["faces"][0]
    assert set(face) >= {"label", "probs", "valence", "arousal"}
    assert main([*args, "--no-detect"]) == 0
    assert re.search(r"valence [+-]\d\.\d\d arousal [+-]\d\.\d\d", capsys.readouterr().out)


def test_onnx_export_matches_pytorch(trained: TrainResult, affectnet: Path, tmp_path: Path) -> None:
    files, _ = _val_truth(affectnet)
    bundle = load_model_file(trained.model_file)
    torch_model = TorchModel(bundle)
    onnx_model = OnnxModel(export_onnx(trained.run_dir, tmp_path / "model.onnx"))
    assert onnx_model.va and onnx_model.classes == bundle.classes
    crops = [bundle.spec.crop_tensor(load_image(f, rgb=True)) for f in files[:16]]
    batch = bundle.spec.model_input(crops)
    torch_probs, torch_va = torch_model.outputs(batch)
    onnx_probs, onnx_va = onnx_model.outputs(batch)
    assert torch_va is not None and onnx_va is not None
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5)
    np.testing.assert_allclose(onnx_va, torch_va, atol=1e-5)
    np.testing.assert_allclose(onnx_model(batch), torch_probs, atol=1e-5)
    face = Recognizer.load(tmp_path / "model.onnx", detect=False).predict(files[0])[0]
    assert face.valence == pytest.approx(float(torch_va[0, 0]), abs=1e-4)


def test_limit_draws_a_stratified_train_sample(affectnet: Path, tmp_path: Path) -> None:
    config = load_config(
        **quick_options(affectnet, tmp_path, head="multitask", image_size=32, limit=30)
    )
    prepared = prepare(config)
    train_split = prepared.datamodule.splits["train"]
    assert train_split.class_counts(3).tolist() == [10, 10, 10]
    assert train_split.va is not None and not train_split.va.isnan().any()
    assert len(prepared.datamodule.splits["val"].labels) == 60  # only train is limited
    again = prepare(config).datamodule.splits["train"]
    assert again.rows.tolist() == train_split.rows.tolist()


def test_train_cli_limit_and_data_note(
    affectnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(affectnet), "--model", "baseline_cnn", "--head", "multitask"]
    args += ["--limit", "30", "--epochs", "1", "--batch-size", "10", "--augment", "none"]
    args += ["--num-workers", "0", "--runs-dir", str(tmp_path), "--image-size", "32"]
    args += ["--input-size", "32", "--va-loss", "mse", "--patience", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"data: {affectnet}: excluded 2" in out
    assert re.search(r"val CCC at that epoch: valence -?[\d.]+  arousal -?[\d.]+", out)
    with (tmp_path / "baseline_cnn-finetune" / "metrics.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert set(row) >= {"val_ccc_valence", "val_ccc_arousal", "val_score"}
    assert float(row["images_per_s"]) > 0
    log = (tmp_path / "baseline_cnn-finetune" / "config.yaml").read_text()
    assert "limit: 30" in log and "va_loss: mse" in log
