"""The model contract: shipped files of format 1, format-1 files of the old layout, format 2."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ferlab
from ferlab.cli import main
from ferlab.errors import ModelError
from ferlab.inference.onnx_export import export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.models.artifact import ModelBundle, default_model_file, load_model_file, save_model_file
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing

SHIPPED = default_model_file()


def test_shipped_files_read_into_one_spec() -> None:
    torch_spec = load_model_file(SHIPPED).spec
    onnx_spec = OnnxModel(SHIPPED.with_suffix(".onnx")).spec
    assert torch_spec.name == "mobilenet_v2" and torch_spec.classes[3] == "happy"
    assert (torch_spec.image_size, torch_spec.color, torch_spec.tta) == (48, "gray", "flip")
    assert torch_spec.int8_float_convs == 33 and len(torch_spec.class_prior or ()) == 7
    # a format-1 export did not carry the int8 recommendation
    assert replace(torch_spec.for_export(), int8_float_convs=0) == onnx_spec


def test_a_format1_file_of_the_old_layout_loads(tmp_path: Path) -> None:
    model = create_model("baseline_cnn", 2, pretrained=False)
    path = tmp_path / "old.pt"
    torch.save(
        {
            "format": "ferlab-model",
            "version": 1,
            "model": "baseline_cnn",
            "head": "linear",
            "va": False,
            "classes": ["happy", "sad"],
            "preprocessing": Preprocessing(48, 1, (0.5,), (0.5,)).to_dict(),
            "meta": {
                "config": {"image_size": 40, "color": "gray", "seed": 3, "keep": "happy,sad"},
                "tta": True,
                "label_source": None,
                "label_mode": "single",
                "class_prior": [3, 1],
            },
            "state_dict": model.state_dict(),
        },
        path,
    )
    spec = load_model_file(path).spec
    assert (spec.image_size, spec.seed, spec.keep, spec.tta) == (40, 3, "happy,sad", "flip")
    np.testing.assert_allclose(spec.prior("old.pt"), [0.75, 0.25])
    assert spec.split_options() == {"val_fraction": 0.1, "test_fraction": 0.1, "seed": 3}


def test_format2_round_trip_and_one_runtime(tmp_path: Path) -> None:
    spec = ModelSpec(
        "baseline_cnn", ("a", "b"), Preprocessing(48, 1, (0.5,), (0.5,)), color="rgb", seed=5
    )
    path = tmp_path / "model.pt"
    save_model_file(path, ModelBundle(create_model("baseline_cnn", 2, pretrained=False), spec))
    assert torch.load(path, weights_only=True)["version"] == 2
    runner = ferlab.load_model(path)
    assert runner.spec == spec and runner.label == "torch"
    assert runner.spec.crop_tensor(np.zeros((60, 50, 3), np.uint8)).shape == (3, 48, 48)
    onnx = ferlab.load_model(path, backend="onnx")
    assert onnx.label == "onnxruntime" and onnx.spec == spec.for_export()
    with pytest.raises(ModelError, match=r"runs on onnxruntime; use its \.pt model file"):
        onnx.explainable()


def test_default_runs_the_shipped_export() -> None:
    assert ferlab.load_model("default").label == "onnxruntime"
    assert ferlab.load_model("default", backend="torch").label == "torch"


def test_what_onnx_cannot_do_says_what_can(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ModelSpec("baseline_cnn", ("a", "b"), Preprocessing(48, 1, (0.5,), (0.5,)))
    model_file = tmp_path / "model.pt"
    save_model_file(model_file, ModelBundle(create_model("baseline_cnn", 2), spec))
    onnx = export_onnx(model_file, tmp_path / "model.onnx")
    face = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(face)
    capsys.readouterr()
    assert main(["explain", str(face), "--model", str(onnx), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs on onnxruntime; use its .pt model file" in err
    assert main(["export", str(onnx), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already an ONNX export; export its .pt model file" in err
