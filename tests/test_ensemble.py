"""Ensembles: trained models averaged into one model file that runs everywhere a model runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import ferlab
from conftest import conv_inputs_are_float, save_random_model
from ferlab.cli import main
from ferlab.errors import ConfigError, ModelError
from ferlab.inference.gradcam import gradcam_heatmaps
from ferlab.inference.onnx_export import export_onnx, member_convolutions, member_of
from ferlab.models.artifact import ModelBundle, load_model_file, save_model_file
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing

CLASSES = ("happy", "sad", "surprise")
IMAGENET = Preprocessing(96, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _model_file(path: Path, name: str, prep: Preprocessing, seed: int, **spec: object) -> Path:
    torch.manual_seed(seed)
    model = create_model(name, len(CLASSES)).eval()
    options = {"image_size": 48, "tta": "none", **spec}
    save_model_file(path, ModelBundle(model, ModelSpec(name, CLASSES, prep, **options)))
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A gray 48 px baseline CNN and an RGB 96 px MobileNetV2 (ImageNet normalisation), both
    reading 48 px gray crops, with random weights."""
    folder = tmp_path_factory.mktemp("members")
    gray = Preprocessing(48, 1, (0.5,), (0.5,))
    return [
        _model_file(folder / "cnn.pt", "baseline_cnn", gray, 0, class_prior=(0.5, 0.3, 0.2)),
        _model_file(folder / "mnv2.pt", "mobilenet_v2", IMAGENET, 1, class_prior=(0.3, 0.3, 0.4)),
    ]


def _crops(count: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (count, 1, 48, 48), dtype=torch.uint8, generator=generator)


def _probs(model_file: Path, crops: torch.Tensor) -> np.ndarray:
    runner = ferlab.load_model(model_file, backend="torch")
    return runner(runner.spec.model_input(crops))


def test_the_ensemble_averages_what_its_members_answer(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ensemble.pt"
    args = ["ensemble", *map(str, members), "--weights", "1,3", "--out", str(out)]
    assert main(args) == 0
    assert "2 models: baseline_cnn (1), mobilenet_v2 (3)" in capsys.readouterr().out
    crops = _crops()
    expected = 0.25 * _probs(members[0], crops) + 0.75 * _probs(members[1], crops)
    np.testing.assert_allclose(_probs(out, crops), expected, atol=2e-3)
    assert np.abs(expected - _probs(members[0], crops)).max() > 0.01  # the weights matter

    spec = load_model_file(out).spec
    assert (spec.name, spec.head, spec.classes) == ("ensemble", "mean", CLASSES)
    assert [(m.name, m.weight, m.prep) for m in spec.members] == [
        ("baseline_cnn", 1.0, Preprocessing(48, 1, (0.5,), (0.5,))),
        ("mobilenet_v2", 3.0, IMAGENET),
    ]
    np.testing.assert_allclose(spec.class_prior, [0.4, 0.3, 0.3])
    assert torch.load(out, weights_only=True)["spec"]["members"][1]["name"] == "mobilenet_v2"


@pytest.mark.parametrize("weight", ["1e308", "1e-320", "3e38"])
def test_extreme_equal_weights_average_as_equal_ones(
    members: list[Path], tmp_path: Path, weight: str
) -> None:
    equal, extreme = tmp_path / "equal.pt", tmp_path / "extreme.pt"
    assert main(["ensemble", *map(str, members), "--out", str(equal)]) == 0
    assert (
        main(
            [
                "ensemble",
                *map(str, members),
                "--weights",
                f"{weight},{weight}",
                "--out",
                str(extreme),
            ]
        )
        == 0
    )
    crops = _crops()
    got = _probs(extreme, crops)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _probs(equal, crops), atol=1e-6)


def test_an_ensemble_exports_to_onnx_and_explains(members: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ensemble.pt"
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    onnx = export_onnx(out, tmp_path / "ensemble.onnx")
    crops = _crops()
    runner = ferlab.load_model(onnx)
    assert runner.label == "onnxruntime" and len(runner.spec.members) == 2
    exported = runner(runner.spec.model_input(crops))
    np.testing.assert_allclose(exported, _probs(out, crops), atol=1e-4)
    maps = gradcam_heatmaps(load_model_file(out), crops[:2])
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()


def test_an_int8_ensemble_keeps_each_members_leading_convolutions_float(
    members: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "ensemble.pt"
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    crops = [image.numpy() for image in _crops(4).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)]
    per_member = member_convolutions(load_model_file(out).model)
    assert per_member == [6, 52]
    int8 = export_onnx(out, tmp_path / "e.onnx", "int8", calibration=crops, float_convs=2)
    convs = [node for node in onnx.load(int8).graph.node if node.op_type == "Conv"]
    owners = [member_of(node) for node in convs]
    floats = conv_inputs_are_float(int8)
    for member, count in enumerate(per_member):
        kept = [flag for flag, owner in zip(floats, owners, strict=True) if owner == member]
        assert kept == [True] * 2 + [False] * (count - 2)
    with pytest.raises(ConfigError, match="float_convs: 7, but its smallest member has 6"):
        export_onnx(out, tmp_path / "x.onnx", "int8", calibration=crops, float_convs=7)


def test_twins_with_the_same_weights_export_to_int8(
    pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two files with the same weights (a run and its resumed twin): the exporter merges their
    identical leading layers into shared nodes, and each member still keeps its first
    convolutions float."""
    twins = [save_random_model(tmp_path / name, CLASSES) for name in ("run.pt", "twin.pt")]
    out = tmp_path / "twins.pt"
    assert main(["ensemble", *map(str, twins), "--out", str(out)]) == 0
    argv = ["export", str(out), "--quantize", "int8", "--calibration", str(pattern_tree / "val")]
    assert main([*argv, "--out", str(tmp_path / "all.onnx")]) == 0
    assert main([*argv, "--float-convs", "2", "--out", str(tmp_path / "mixed.onnx")]) == 0
    assert "agreement with the float model" in capsys.readouterr().out
    everywhere, mixed = (conv_inputs_are_float(tmp_path / f) for f in ("all.onnx", "mixed.onnx"))
    assert member_convolutions(load_model_file(out).model) == [6, 6]
    assert len(mixed) < 12  # the twins' first convolution is one node of the graph
    assert not any(everywhere) and mixed.count(False) == 2 * (6 - 2)
    crops = _crops()
    exported = ferlab.load_model(tmp_path / "mixed.onnx")
    probs = exported(exported.spec.model_input(crops))
    np.testing.assert_allclose(probs, _probs(twins[0], crops), atol=0.05)


def test_models_that_cannot_be_averaged_are_refused_in_one_line(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gray = Preprocessing(48, 1, (0.5,), (0.5,))
    two = _model_file(tmp_path / "two.pt", "baseline_cnn", gray, 2, image_size=64)
    out = tmp_path / "e.pt"
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    other = tmp_path / "other.pt"
    cases = [
        ([str(members[0])], "an ensemble needs at least two models"),
        ([*map(str, members), "--weights", "1"], "--weights: 1 weights for 2 models"),
        ([*map(str, members), "--weights", "1,-2"], "every weight must be a number above 0"),
        ([*map(str, members), "--weights", "1,x"], "expected numbers separated by commas"),
        ([str(members[0]), str(two)], "decodes crops at 64 px gray"),
        ([str(out), str(members[0])], "already an ensemble; list its models instead"),
        ([str(members[0]), "fer2013"], "an ensemble's models answer the same classes"),
        (
            [str(members[0]), str(members[0].parent / "." / members[0].name)],
            f"the same model file as {members[0]}",
        ),
        (["default", "fer2013"], "fer2013: the same model file as default"),
        ([*map(str, members), "--out", str(members[0])], "this is one of the inputs"),
        ([*map(str, members), "--out", str(out)], "--exist-ok"),
        ([*map(str, members), "--out", str(tmp_path / "e.onnx")], "ending in .pt"),
        ([*map(str, members), "--out", str(tmp_path / ".pt")], "ending in .pt"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["ensemble", *args, *([] if "--out" in args else ["--out", str(other)])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
        assert not other.exists()
    with pytest.raises(ConfigError, match="the same model file as"):  # the Python API too
        ferlab.combine_models([members[0], members[0].parent / "." / members[0].name])


def test_a_hostile_ensemble_file_is_refused_naming_the_key(
    members: list[Path], tmp_path: Path
) -> None:
    source = tmp_path / "e.pt"
    assert main(["ensemble", *map(str, members), "--out", str(source)]) == 0
    edits = {
        "spec.members[1]: unknown model": lambda spec: spec["members"][1].update(name="nope"),
        "spec.members[0].weight": lambda spec: spec["members"][0].update(weight=-1.0),
        "spec.members: expected a list": lambda spec: spec.update(members=[{}] * 17),
        "an ensemble lists its members": lambda spec: spec.update(members=[]),
        "spec.members[1].preprocessing.in_channels": lambda spec: spec["members"][1][
            "preprocessing"
        ].update(in_channels=1, mean=[0.5], std=[0.5]),
    }
    for message, edit in edits.items():
        changed = torch.load(source, weights_only=True)
        edit(changed["spec"])
        file = tmp_path / "hostile.pt"
        torch.save(changed, file)
        with pytest.raises(ModelError, match=r"hostile\.pt: ") as error:
            load_model_file(file)
        assert message in str(error.value) and "\n" not in str(error.value)
