"""The model that ships in the package: it loads offline, runs on onnxruntime, matches its PyTorch
weights, keeps its accuracy in int8, and `make demo` recognizes the bundled photo with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferlab import Recognizer, evaluate
from ferlab.demo import bundled_photo
from ferlab.inference.batch import find_images
from ferlab.inference.images import load_image
from ferlab.inference.onnx_export import export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.runner import TorchModel
from ferlab.models.artifact import default_model_file, load_model_file

SHIPPED = default_model_file()


def test_shipped_files_are_small_and_load_weights_only() -> None:
    assert SHIPPED.stat().st_size < 25e6
    assert SHIPPED.with_suffix(".onnx").stat().st_size < 25e6
    bundle = load_model_file(SHIPPED)
    assert bundle.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_default_runs_on_onnxruntime_and_agrees_with_its_weights() -> None:
    onnx_default = Recognizer.load("default").classifier
    torch_default = Recognizer.load("default", backend="torch").classifier
    assert onnx_default.runtime == "onnxruntime" and torch_default.runtime == "torch"
    rng = np.random.default_rng(0)
    spec = torch_default.spec
    crops = [spec.crop_tensor(rng.integers(0, 256, (60, 60, 3), np.uint8)) for _ in range(8)]
    batch = spec.model_input(crops)
    assert np.abs(onnx_default(batch) - torch_default(batch)).max() < 1e-4


def test_demo_recognizes_the_bundled_photo(tmp_path: Path) -> None:
    out = tmp_path / "annotated.jpg"
    done = subprocess.run(
        [sys.executable, "-m", "ferlab.demo", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{bundled_photo()}: 1 face(s)" in done.stdout
    assert "on onnxruntime" in done.stdout and f"wrote {out}" in done.stdout
    annotated = load_image(out, rgb=True)
    assert annotated.shape == load_image(bundled_photo(), rgb=True).shape
    (face,) = Recognizer.load("default").predict(bundled_photo())
    assert face.label in done.stdout and face.detection_score > 0.9


def _test_crops(fer2013: Path, classifier: TorchModel) -> np.ndarray:
    files, _ = find_images([str(fer2013 / "test")])
    crops = [classifier.spec.crop_tensor(load_image(f.path)) for f in files]
    return classifier.spec.model_input(crops)


@pytest.mark.slow
def test_privatetest_accuracy_meets_the_bar(fer2013_dir: Path, tmp_path: Path) -> None:
    result = evaluate("default", fer2013_dir, split="test", out=tmp_path / "eval")
    assert result.metrics["samples"] == 3589
    assert result.metrics["accuracy"] >= 0.70


@pytest.mark.slow
def test_ferplus_model_on_the_crowd_majority(fer2013_dir: Path, tmp_path: Path) -> None:
    """The FER+ protocol on PrivateTest: 3,535 faces, accuracy as its model card states."""
    votes = fer2013_dir / "ferplus.csv"
    if not votes.is_file():
        pytest.skip(f"FER+ votes not found at {votes}")
    result = evaluate("ferplus", fer2013_dir, split="test", labels=votes, out=tmp_path / "eval")
    assert result.metrics["samples"] == 3535
    assert result.metrics["classes"][-1] == "contempt"
    assert result.metrics["prior_tau"] == 0.1  # its recorded default, chosen on val
    assert result.metrics["accuracy"] == pytest.approx(0.8379, abs=5e-4)
    assert result.metrics["crowd"]["predicted_class_voted"] > 0.97


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_fer2013_test(fer2013_dir: Path, tmp_path: Path) -> None:
    torch_model = TorchModel(load_model_file(SHIPPED))
    train_files, _ = find_images([str(fer2013_dir / "train")])
    calibration = [f.path for f in train_files[:: len(train_files) // 512][:512]]
    int8 = OnnxModel(export_onnx(SHIPPED, tmp_path / "int8.onnx", "int8", calibration=calibration))
    x = _test_crops(fer2013_dir, torch_model)
    fp32_top1 = np.concatenate([torch_model(x[i : i + 256]) for i in range(0, len(x), 256)])
    int8_top1 = np.concatenate([int8(x[i : i + 256]) for i in range(0, len(x), 256)])
    agreement = float((fp32_top1.argmax(1) == int8_top1.argmax(1)).mean())
    assert len(x) == 3589 and agreement >= 0.99, f"int8 top-1 agreement {agreement:.4f}"


def test_shipped_models_by_name() -> None:
    from ferlab.errors import ModelError
    from ferlab.models.artifact import DEFAULT_MODEL, SHIPPED_MODELS, resolve_model_file

    assert resolve_model_file("default") == resolve_model_file(DEFAULT_MODEL)
    fer2013 = load_model_file(resolve_model_file("fer2013"))
    assert fer2013.spec.class_prior is not None
    assert len(fer2013.spec.class_prior) == len(fer2013.classes) == 7
    assert Recognizer.load("fer2013").classifier.runtime == "onnxruntime"
    with pytest.raises(ModelError, match="no such run folder or model file"):
        resolve_model_file("fer2014")
    assert set(SHIPPED_MODELS) >= {"fer2013"}
