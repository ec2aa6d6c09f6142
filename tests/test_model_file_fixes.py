"""Model files and exports that load but do not fit, inputs a runner cannot take, unreadable
files, unsafe class names, hostile weights, priors that do not fit, and misuse of the Python API:
each is a one-line error that says what is wrong."""

from __future__ import annotations

import csv
import errno
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import RunsCode, save_random_model
from ferlab.cli import main
from ferlab.errors import ConfigError, ModelError
from ferlab.evaluation.predictions import write_predictions
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.runtime import load_model
from ferlab.models import bounds
from ferlab.models.artifact import ModelBundle, load_model_file, save_model_file
from ferlab.models.combine import combine_models
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.models.weights import load_state_file, weights_file_problem
from ferlab.preprocessing import Preprocessing

CLASSES = ("a", "b", "c")
PREP = Preprocessing(48, 1, (0.5,), (0.5,))


def _onnx(path: Path, nodes: list, *, dtype: int = TensorProto.FLOAT, init: list = ()) -> Path:
    """A graph of ``nodes`` from ``input`` ([N, 1, 48, 48] of ``dtype``) to ``probs`` ([N, 3]),
    with the metadata of an export of a 3-class model."""
    graph = helper.make_graph(
        nodes,
        "stand-in",
        [helper.make_tensor_value_info("input", dtype, ["batch", 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        initializer=list(init),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    spec = ModelSpec("baseline_cnn", CLASSES, PREP)
    model.metadata_props.add(key="format", value="ferlab-onnx/2")
    model.metadata_props.add(key="spec", value=json.dumps(spec.to_dict()))
    onnx.save(model, path)
    return path


def _softmax_nodes(source: str = "input") -> tuple[list, list]:
    """``source`` flattened, times a fixed matrix, softmax: nodes and initializers."""
    weight = np.random.default_rng(0).normal(0, 0.01, (48 * 48, len(CLASSES))).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", [source], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    return nodes, [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel())]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("model") / "model.pt", CLASSES)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(TensorProto.DOUBLE, "tensor(double)"), (TensorProto.INT64, "tensor(int64)")],
)
def test_an_export_that_takes_other_than_float32_is_refused_at_load(
    tmp_path: Path, dtype: int, name: str
) -> None:
    nodes, init = _softmax_nodes("cast")
    cast = helper.make_node("Cast", ["input"], ["cast"], to=TensorProto.FLOAT)
    path = _onnx(tmp_path / "x.onnx", [cast, *nodes], dtype=dtype, init=init)
    expected = rf"x\.onnx: the graph's input is {re.escape(name)}, expected float32$"
    with pytest.raises(ModelError, match=expected):
        OnnxModel(path)


def test_an_export_that_answers_one_row_for_a_batch_is_refused(tmp_path: Path) -> None:
    answer = helper.make_tensor("c", TensorProto.FLOAT, [1, 3], [1 / 3] * 3)
    path = _onnx(tmp_path / "x.onnx", [helper.make_node("Constant", [], ["probs"], value=answer)])
    runner = OnnxModel(path)
    assert runner(np.zeros((1, 1, 48, 48), np.float32)).shape == (1, 3)
    with pytest.raises(ModelError, match=r"x\.onnx: the model returned 1 row\(s\) for 2 image"):
        runner(np.zeros((2, 1, 48, 48), np.float32))


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_runner_names_the_input_it_takes(model_file: Path, tmp_path: Path, backend: str) -> None:
    if backend == "onnx":
        nodes, init = _softmax_nodes()
        runner = OnnxModel(_onnx(tmp_path / "x.onnx", nodes, init=init))
    else:
        runner = load_model(model_file, backend="torch")
    assert runner(np.zeros((2, 1, 48, 48), np.float64)).shape == (2, 3)
    wanted = r"input: expected a normalised float32 numpy array of shape \(N, 1, 48, 48\)"
    with pytest.raises(ModelError, match=wanted + r".*got a float32 array of shape \(2, 3, 5, 5\)"):
        runner(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(ModelError, match=wanted + ".*got list"):
        runner([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="got a uint8 array"):
        runner(np.zeros((2, 1, 48, 48), np.uint8))


def test_model_input_takes_numpy_crops_as_tensors() -> None:
    spec = ModelSpec("baseline_cnn", CLASSES, PREP)
    crops = np.random.default_rng(0).integers(0, 256, (2, 1, 40, 40), np.uint8)
    expected = spec.model_input(torch.from_numpy(crops))
    assert expected.shape == (2, 1, 48, 48) and expected.dtype == np.float32
    np.testing.assert_array_equal(spec.model_input(crops), expected)
    np.testing.assert_array_equal(spec.model_input(list(crops)), expected)
    np.testing.assert_array_equal(spec.model_input(crops[0]), expected[:1])
    with pytest.raises(TypeError, match=r"takes uint8 crops \(C, H, W\) as torch tensors or numpy"):
        spec.model_input(crops.astype(np.float32))
    with pytest.raises(TypeError, match="got str"):
        spec.model_input(["crop"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"with 1 or 3 channels, got shape \(40, 40, 3\)"):
        spec.model_input(np.zeros((40, 40, 3), np.uint8))


def _unreadable(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Opening ``target`` fails as a file its user cannot read does (the tests may run as root)."""
    real_open = Path.open

    def guarded_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", guarded_open)


def test_an_unreadable_model_file_says_permission_denied(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes, init = _softmax_nodes()
    export = _onnx(tmp_path / "x.onnx", nodes, init=init)
    _unreadable(monkeypatch, model_file)
    with pytest.raises(ModelError, match=r"model\.pt: permission denied$"):
        load_model_file(model_file)
    _unreadable(monkeypatch, export)
    with pytest.raises(ModelError, match=r"x\.onnx: permission denied$"):
        OnnxModel(export)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("an\ngry", "control characters"),
        ("\x1b[31mangry", "control characters"),
        ("an\u200bgry", "control characters"),
        (" ", "blank or has spaces around it"),
        ("angry ", "blank or has spaces around it"),
    ],
)
def test_class_names_that_would_not_print_as_themselves_are_refused(
    tmp_path: Path, name: str, problem: str
) -> None:
    path = save_random_model(tmp_path / "model.pt", (name, "b", "c"))
    with pytest.raises(ModelError, match=f"model.pt: classes: .* {problem}"):
        load_model_file(path)
    data = ModelSpec("baseline_cnn", CLASSES, PREP).to_dict() | {"classes": [name, "b", "c"]}
    with pytest.raises(ModelError, match=f"x.onnx: classes: .* {problem}"):
        ModelSpec.from_dict(Path("x.onnx"), data)  # as an export's metadata is read


def test_a_class_name_with_a_comma_loads_and_is_quoted_in_csv(tmp_path: Path) -> None:
    bundle = load_model_file(save_random_model(tmp_path / "model.pt", ("a,b", "c", "d")))
    assert bundle.classes == ["a,b", "c", "d"]
    assert bounds.checked_text(Path("x.onnx"), "classes", "happy, mostly") == "happy, mostly"
    out = tmp_path / "predictions.csv"
    probs = np.array([[0.7, 0.2, 0.1]])
    write_predictions(out, ["face.png"], np.array([0]), probs, bundle.classes)
    header, row = csv.reader(io.StringIO(out.read_text()))
    assert header == ["path", "true", "predicted", "p_a,b", "p_c", "p_d", "correct"]
    assert row[:3] == ["face.png", "a,b", "a,b"]


def test_a_weights_file_that_would_run_code_is_refused_in_model_file_words(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    for name, write in [
        ("zip.pth", lambda path: torch.save({"w": RunsCode(marker)}, path)),
        ("legacy.pth", lambda path: path.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))),
    ]:
        path = tmp_path / name
        write(path)
        with pytest.raises(ModelError) as caught:
            load_state_file(path)
        assert str(caught.value) == (
            f"cannot load weights file {path}: refused: the file holds Python objects beyond "
            "weights (weights-only load)"
        )
        assert not marker.exists()


def test_an_empty_or_foreign_weights_file_is_told_without_unpickling(tmp_path: Path) -> None:
    empty, foreign, good = tmp_path / "empty.pth", tmp_path / "text.pth", tmp_path / "good.pth"
    empty.write_bytes(b"")
    foreign.write_text("not weights")
    torch.save({"w": torch.zeros(2)}, good)
    assert weights_file_problem(empty) == "empty file"
    assert "neither a zip archive nor a pickle" in str(weights_file_problem(foreign))
    assert weights_file_problem(good) is None
    with pytest.raises(ModelError, match=r"weights file .*empty\.pth: empty file"):
        load_state_file(empty)


def _model_with(path: Path, classes: int, heads: int, prior: list[float]) -> Path:
    """A file whose spec lists ``classes`` classes and ``prior`` while its head has ``heads``."""
    torch.manual_seed(0)
    model = create_model("baseline_cnn", heads, pretrained=False)
    spec = ModelSpec("baseline_cnn", tuple(f"c{i}" for i in range(classes)), PREP)
    save_model_file(path, ModelBundle(model=model, spec=spec))
    payload = torch.load(path, weights_only=True)
    payload["spec"]["class_prior"] = prior
    torch.save(payload, path)
    return path


def test_a_prior_that_does_not_fit_names_the_real_problem(tmp_path: Path) -> None:
    more_classes = _model_with(tmp_path / "eight.pt", 8, 7, [1.0] * 7)
    with pytest.raises(ModelError, match=r"eight\.pt: weights do not fit model 'baseline_cnn'"):
        load_model_file(more_classes)
    short = _model_with(tmp_path / "short.pt", 7, 7, [1.0, 2.0])
    with pytest.raises(ModelError, match=r"short.pt: spec.class_prior: 2 positive shares for 7 cl"):
        load_model_file(short)
    nan = _model_with(tmp_path / "nan.pt", 7, 7, [1.0] * 6 + [float("nan")])
    with pytest.raises(ModelError, match=r"nan\.pt: spec\.class_prior: nan is not finite and"):
        load_model_file(nan)
    good = load_model_file(_model_with(tmp_path / "good.pt", 7, 7, [1.0] * 6 + [2.0]))
    np.testing.assert_allclose(good.spec.prior("good.pt"), [0.125] * 6 + [0.25])


def test_an_export_whose_prior_does_not_fit_is_refused(tmp_path: Path) -> None:
    nodes, init = _softmax_nodes()
    path = _onnx(tmp_path / "x.onnx", nodes, init=init)
    model = onnx.load(path)
    entry = next(p for p in model.metadata_props if p.key == "spec")
    entry.value = json.dumps(json.loads(entry.value) | {"class_prior": [1, 2]})
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"x\.onnx: spec\.class_prior: 2 positive shares for 3"):
        OnnxModel(path)


def test_an_ensemble_of_an_export_asks_for_its_model_file(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "a.onnx"
    export.write_bytes(b"stand-in")
    with pytest.raises(ModelError, match=r"a\.onnx: already an ONNX export; combine its \.pt"):
        combine_models([export, model_file])
    argv = ["ensemble", str(export), str(model_file), "--out", str(tmp_path / "e.pt")]
    assert main(argv) == 2
    assert "a.onnx: already an ONNX export; combine its .pt model file instead" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "e.pt").exists()
    for single in ("fer2013", model_file):
        with pytest.raises(ConfigError, match="combine_models takes a list of models, got "):
            combine_models(single)  # type: ignore[arg-type]


def test_load_model_checks_the_backend_of_a_runner_too(model_file: Path) -> None:
    runner = load_model(model_file, backend="torch")
    assert load_model(runner, backend="onnx") is runner
    with pytest.raises(ConfigError, match="backend: unknown 'bogus'"):
        load_model(runner, backend="bogus")
