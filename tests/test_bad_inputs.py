"""Bad inputs, bad model files and failing disks: one ``ferlab: error:`` line naming the file, exit
code 2 (1 where some results were written), no traceback, nothing half-written, nothing deleted
that ferlab did not write.

A read-only or full disk is simulated by patching the calls that create and write files (``chmod``
does not stop root); the CLI runs in-process through ``ferlab.cli.main``, a few cases in a real
subprocess.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from conftest import REPO, make_pattern_tree
from ferlab.cli import main
from ferlab.config import TrainConfig
from ferlab.errors import OutputError
from ferlab.inference.onnx_export import _set_metadata
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.models.artifact import ModelBundle, save_model_file
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing

CLASSES = ["happy", "sad", "surprise"]


# --- helpers -------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``ferlab ARGV`` in-process: (exit code, stdout, stderr); a traceback fails the test."""
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ferlab_command(*argv: object) -> list[str]:
    """The command line that runs ``ferlab ARGV`` from this checkout in a new process."""
    return [sys.executable, "-m", "ferlab.cli", *map(str, argv)]


def assert_one_line(err: str, *names: object) -> str:
    """stderr is one ``ferlab: error:`` line (warnings aside) that names each of ``names``."""
    lines = [line for line in err.splitlines() if not line.startswith("ferlab: warning:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("ferlab: error: "), err
    assert "Traceback" not in err
    assert len(lines[0]) < 400, lines[0]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def not_before_the_check(*args: Any, **kwargs: Any) -> None:
    """Patched over the data loading that must not start before the output folder is checked."""
    raise AssertionError("the data set was read before the output folder was checked")


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def failing_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``failing_disk(folder, code, names)``: creating or writing files below ``folder`` (only
    those whose names start with one of ``names``, if given) raises OSError(code) (EROFS: a
    read-only disk, ENOSPC: a full one); reading still works."""

    def install(folder: Path, code: int = errno.EROFS, names: tuple[str, ...] = ()) -> None:
        root = str(Path(folder).resolve())

        def hit(path: Any) -> bool:
            try:
                text = os.path.realpath(os.fspath(path))
            except TypeError:
                return False
            inside = text == root or text.startswith(root + os.sep)
            return inside and (not names or Path(text).name.startswith(names))

        def refuse(path: Any) -> OSError:
            return OSError(code, os.strerror(code), os.fspath(path))

        real_open, real_os_open = builtins.open, os.open
        real_mkdir, real_replace = os.mkdir, os.replace

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str | os.PathLike) and set(mode) & set("wax+") and hit(file):
                raise refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and hit(path):
                raise refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if hit(path):
                raise refuse(path)
            real_mkdir(path, *args, **kwargs)

        def fake_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if hit(dst):
                raise refuse(dst)
            real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", fake_replace)

    return install


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 KiB tmpfs where this process may mount one (root with CAP_SYS_ADMIN), else skip."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


# --- shared inputs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-inputs")


@pytest.fixture(scope="module")
def model_file(work: Path) -> Path:
    """An untrained baseline_cnn model file (3 classes, 48 px gray): loading is what is tested."""
    torch.manual_seed(0)
    bundle = ModelBundle(
        model=create_model("baseline_cnn", len(CLASSES)),
        spec=ModelSpec(
            "baseline_cnn", tuple(CLASSES), Preprocessing(48, 1, (0.5,), (0.5,)), tta="flip"
        ),
    )
    path = work / "model.pt"
    save_model_file(path, bundle)
    return path


@pytest.fixture(scope="module")
def face(work: Path) -> Path:
    path = work / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tree(work: Path) -> Path:
    return make_pattern_tree(work / "tree", {"train": 6, "val": 2, "test": 2})


# --- malformed model files -----------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(*keys: str, value: Any) -> Mutation:
    def mutate(payload: dict[str, Any]) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _drop(*keys: str) -> Mutation:
    def mutate(payload: dict[str, Any]) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def _first_weight(value: Any) -> Mutation:
    def mutate(payload: dict[str, Any]) -> None:
        state = payload["state_dict"]
        state[next(iter(state))] = value

    return mutate


def _nan_weights(payload: dict[str, Any]) -> None:
    for tensor in payload["state_dict"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))


WRONG_VALUES = {"int": 5, "text": "x", "list": [1, 2], "none": None, "float": float("nan")}
MUTATIONS: dict[str, Mutation] = {
    "no-format": _drop("format"),
    "no-spec": _drop("spec"),
    **{f"no-{key}": _drop("spec", key) for key in ("name", "classes", "preprocessing")},
    "no-state_dict": _drop("state_dict"),
    **{f"format-{n}": _set("format", value=v) for n, v in WRONG_VALUES.items()},
    **{f"version-{n}": _set("version", value=v) for n, v in WRONG_VALUES.items() if n != "int"},
    "version-newer": _set("version", value=99),
    "version-huge": _set("version", value=10**15),
    **{f"spec-{n}": _set("spec", value=v) for n, v in WRONG_VALUES.items()},
    **{f"model-{n}": _set("spec", "name", value=v) for n, v in WRONG_VALUES.items()},
    "model-unknown": _set("spec", "name", value="resnet999"),
    **{f"head-{n}": _set("spec", "head", value=v) for n, v in WRONG_VALUES.items()},
    **{f"va-{n}": _set("spec", "va", value=v) for n, v in WRONG_VALUES.items()},
    "va-true": _set("spec", "va", value=True),
    **{f"classes-{n}": _set("spec", "classes", value=v) for n, v in WRONG_VALUES.items()},
    "classes-empty": _set("spec", "classes", value=[]),
    "classes-repeat": _set("spec", "classes", value=["a", "a", "b"]),
    "classes-four": _set("spec", "classes", value=["a", "b", "c", "d"]),
    "classes-huge": _set("spec", "classes", value=[f"c{i}" for i in range(5000)]),
    **{
        f"preprocessing-{n}": _set("spec", "preprocessing", value=v)
        for n, v in WRONG_VALUES.items()
    },
    "preprocessing-empty": _set("spec", "preprocessing", value={}),
    "input_size-negative": _set("spec", "preprocessing", "input_size", value=-3),
    "input_size-zero": _set("spec", "preprocessing", "input_size", value=0),
    "input_size-huge": _set("spec", "preprocessing", "input_size", value=10**6),
    "input_size-text": _set("spec", "preprocessing", "input_size", value="x"),
    "input_size-one": _set("spec", "preprocessing", "input_size", value=1),
    "in_channels-two": _set("spec", "preprocessing", "in_channels", value=2),
    "in_channels-three": _set(
        "spec",
        "preprocessing",
        value={"input_size": 48, "in_channels": 3, "mean": [0] * 3, "std": [1] * 3},
    ),
    "in_channels-huge": _set("spec", "preprocessing", "in_channels", value=10**6),
    "mean-empty": _set("spec", "preprocessing", "mean", value=[]),
    "mean-nan": _set("spec", "preprocessing", "mean", value=[float("nan")]),
    "std-zero": _set("spec", "preprocessing", "std", value=[0.0]),
    "std-missing": _drop("spec", "preprocessing", "std"),
    **{f"meta-{n}": _set("meta", value=v) for n, v in WRONG_VALUES.items() if n != "none"},
    "meta-none": _set("meta", value=None),
    "decode-huge": _set("spec", "image_size", value=10**6),
    "decode-negative": _set("spec", "image_size", value=-3),
    "decode-text": _set("spec", "image_size", value="48"),
    "color-cmyk": _set("spec", "color", value="cmyk"),
    "seed-negative": _set("spec", "seed", value=-1),
    "val_fraction-two": _set("spec", "val_fraction", value=2.0),
    "keep-list": _set("spec", "keep", value=["happy"]),
    "label_mode-other": _set("spec", "label_mode", value="mode"),
    "class_prior-zero": _set("spec", "class_prior", value=[1, 0, 1]),
    "prior_tau-huge": _set("spec", "prior_tau", value=7),
    "tta-zoom": _set("spec", "tta", value="zoom"),
    "tta-int": _set("spec", "tta", value=3),
    "float_convs-negative": _set("spec", "int8_float_convs", value=-5),
    "float_convs-huge": _set("spec", "int8_float_convs", value=10**9),
    **{f"state_dict-{n}": _set("state_dict", value=v) for n, v in WRONG_VALUES.items()},
    "weight-shape": _first_weight(torch.zeros(2)),
    "weight-not-tensor": _first_weight(3),
    "weight-extra": _set("state_dict", "zzz", value=torch.zeros(2)),
    "weights-nan": _nan_weights,
}
RAW_FILES = ["empty", "text", "truncated-10", "truncated-50", "truncated-99", "zip-not-torch"]


def write_malformed(model_file: Path, name: str, folder: Path) -> Path:
    """Write the model file with mutation (or damage) ``name`` applied, into ``folder``."""
    path = folder / f"{name}.pt"
    if name in MUTATIONS:
        payload = torch.load(model_file, weights_only=True)
        MUTATIONS[name](payload)
        torch.save(payload, path)
        return path
    raw = model_file.read_bytes()
    contents = {
        "empty": b"",
        "text": b"emotion,pixels\n" * 20,
        "truncated-10": raw[: len(raw) // 10],
        "truncated-50": raw[: len(raw) // 2],
        "truncated-99": raw[: len(raw) * 99 // 100],
    }
    if name in contents:
        path.write_bytes(contents[name])
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "not a model")
    return path


@pytest.fixture
def malformed(model_file: Path, tmp_path: Path) -> Callable[[str], Path]:
    """Writes a malformed model file by name into the test's own folder (freed when it passes)."""
    return lambda name: write_malformed(model_file, name, tmp_path)


def test_the_untouched_model_file_predicts(
    model_file: Path, face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "predict", face, "--model", model_file, "--no-detect")
    assert code == 0, err
    assert out.startswith(str(face))


@pytest.mark.parametrize("name", [*MUTATIONS, *RAW_FILES])
def test_malformed_model_file_is_one_line(
    name: str, malformed: Callable[[str], Path], face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(MUTATIONS) + len(RAW_FILES) >= 60
    path = malformed(name)
    code, out, err = run_cli(capsys, "predict", face, "--model", path, "--no-detect")
    assert code == 2
    assert out == ""
    assert_one_line(err, path)


def test_bounded_values_name_the_key(
    malformed: Callable[[str], Path], face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = {
        "decode-huge": "spec.image_size: 1000000 is outside 8-1024",
        "input_size-huge": "preprocessing.input_size: 1000000 is outside 8-1024",
        "in_channels-three": "model 'baseline_cnn' takes 1",
        "weights-nan": "NaN or infinite",
        "text": "not a torch zip archive",
    }
    for name, text in expected.items():
        path = malformed(name)
        code, _, err = run_cli(capsys, "predict", face, "--model", path, "--no-detect")
        assert code == 2
        assert text in assert_one_line(err, path)


def test_input_size_too_small_for_the_model(
    work: Path, face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = work / "vgg-at-8px.pt"
    model = create_model("vgg_fer", len(CLASSES))
    save_model_file(
        path, ModelBundle(model, ModelSpec("vgg_fer", CLASSES, Preprocessing(8, 1, (0.5,), (0.5,))))
    )
    code, _, err = run_cli(capsys, "predict", face, "--model", path, "--no-detect")
    assert code == 2
    assert "input_size: 8 px is too small for model 'vgg_fer'" in assert_one_line(err, path)


@pytest.mark.slow
def test_malformed_model_file_in_a_real_process(
    malformed: Callable[[str], Path], face: Path
) -> None:
    path = malformed("text")
    done = subprocess.run(
        ferlab_command("predict", face, "--model", path, "--no-detect"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert done.returncode == 2
    assert_one_line(done.stderr, path)


# --- ONNX exports with malformed metadata --------------------------------------------------


def _onnx_graph(classes: int, *, softmax: bool = True, poison: bool = False) -> onnx.ModelProto:
    """(N, 1, 48, 48) -> flatten -> linear -> softmax: a stand-in export, quick to build."""
    weight = np.random.default_rng(0).normal(0, 0.01, (48 * 48, classes)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    last = "logits"
    if poison:
        nodes.append(helper.make_node("Div", ["logits", "zero"], ["poisoned"]))
        last = "poisoned"
    nodes.append(
        helper.make_node("Softmax", [last], ["probs"], axis=1)
        if softmax
        else helper.make_node("Identity", [last], ["probs"])
    )
    graph = helper.make_graph(
        nodes,
        "stand-in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel()),
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _write_onnx(
    path: Path, graph: onnx.ModelProto, bundle: ModelBundle, /, **meta: str | None
) -> Path:
    """``graph`` saved to ``path`` with the metadata an export of ``bundle`` has, ``meta`` on top
    (None: the key left out)."""
    _set_metadata(graph, bundle, None)
    values = {entry.key: entry.value for entry in graph.metadata_props}
    values.update(meta)
    del graph.metadata_props[:]
    for key, value in values.items():
        if value is not None:
            graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)
    return path


@pytest.fixture(scope="module")
def bundle(model_file: Path) -> ModelBundle:
    from ferlab.models.artifact import load_model_file

    return load_model_file(model_file)


_ONNX_SPEC = ModelSpec(
    "baseline_cnn", tuple(CLASSES), Preprocessing(48, 1, (0.5,), (0.5,)), tta="flip"
).to_dict()


def _spec(**changes: Any) -> dict[str, str | None]:
    """Metadata whose ``spec`` is the export's with ``changes`` (None: the key left out)."""
    data = {**_ONNX_SPEC, **changes}
    return {"spec": json.dumps({k: v for k, v in data.items() if v is not None})}


def _prep(**changes: Any) -> dict[str, Any]:
    return {"input_size": 48, "in_channels": 1, "mean": [0], "std": [1], **changes}


ONNX_METADATA: dict[str, dict[str, str | None]] = {
    "format-text": {"format": "ferlab-onnx/x"},
    "format-newer": {"format": "ferlab-onnx/7"},
    "format-missing": {"format": None},
    "spec-missing": {"spec": None},
    "spec-not-json": {"spec": "{name"},
    "spec-list": {"spec": "[1]"},
    "classes-missing": _spec(classes=None),
    "classes-empty": _spec(classes=[]),
    "classes-number": _spec(classes=3),
    "classes-four": _spec(classes=["a", "b", "c", "d"]),
    "preprocessing-list": _spec(preprocessing=[1]),
    "in_channels-two": _spec(preprocessing=_prep(in_channels=2, mean=[0, 0], std=[1, 1])),
    "input_size-mismatch": _spec(preprocessing=_prep(input_size=64)),
    "std-negative": _spec(preprocessing=_prep(std=[-1])),
    "decode-huge": _spec(image_size=70000),
    "decode-negative": _spec(image_size=-1),
    "decode-color": _spec(color="cmyk"),
    "tta-zoom": _spec(tta="zoom"),
    "va-text": _spec(va="yes"),
    "va-true": _spec(va=True),
    "seed-text": _spec(seed="zero"),
    "int8-negative": {"int8": json.dumps({"float_convs": -1})},
    "int8-not-json": {"int8": "{float_convs"},
    "model-missing": _spec(name=None),
}


@pytest.fixture(scope="module")
def bad_onnx(work: Path, bundle: ModelBundle) -> dict[str, Path]:
    folder = work / "onnx"
    folder.mkdir()
    files = {
        name: _write_onnx(folder / f"{name}.onnx", _onnx_graph(3), bundle, **meta)
        for name, meta in ONNX_METADATA.items()
    }
    files["not-onnx"] = folder / "not-onnx.onnx"
    files["not-onnx"].write_text("hello")
    return files


@pytest.mark.parametrize("name", [*ONNX_METADATA, "not-onnx"])
def test_onnx_with_malformed_metadata_is_one_line(
    name: str, bad_onnx: dict[str, Path], face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "predict", face, "--model", bad_onnx[name], "--no-detect")
    assert code == 2
    assert out == ""
    assert_one_line(err, bad_onnx[name])


@pytest.mark.parametrize("name", ["decode-huge", "spec-not-json", "format-text"])
def test_serve_refuses_malformed_onnx_at_start(
    name: str, bad_onnx: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "serve", "--model", bad_onnx[name], "--port", "0")
    assert code == 2
    assert_one_line(err, bad_onnx[name])


def test_onnx_logits_get_a_softmax_and_bad_outputs_are_refused(
    work: Path, bundle: ModelBundle, face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = np.random.default_rng(1).normal(0, 1, (4, 1, 48, 48)).astype(np.float32)
    logits = OnnxModel(_write_onnx(work / "logits.onnx", _onnx_graph(3, softmax=False), bundle))
    with pytest.warns(UserWarning, match="not probabilities; applying softmax"):
        probs = logits(batch)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()
    raw = logits.session.run(["probs"], {"input": batch})[0]
    assert np.allclose(probs, torch.softmax(torch.from_numpy(raw), dim=1).numpy(), atol=1e-6)

    poisoned = _write_onnx(work / "nan.onnx", _onnx_graph(3, poison=True), bundle)
    code, _, err = run_cli(capsys, "predict", face, "--model", poisoned, "--no-detect")
    assert code == 2
    assert "NaN or infinite" in assert_one_line(err, poisoned)


# --- training options ----------------------------------------------------------------------

BAD_TRAIN_FLAGS = [
    ("--limit-per-class", "0", "limit_per_class"),
    ("--max-steps-per-epoch", "0", "max_steps_per_epoch"),
    ("--max-val-batches", "0", "max_val_batches"),
    ("--num-workers", "-2", "num_workers"),
    ("--input-size", "-3", "input_size"),
    ("--image-size", "100000", "image_size"),
    ("--grad-clip", "-1", "grad_clip"),
    ("--weight-decay", "-0.1", "weight_decay"),
    ("--patience", "-1", "patience"),
    ("--seed", "-5", "seed"),
    ("--dropout", "1.5", "dropout"),
    ("--lr", "nan", "lr"),
    ("--label-smoothing", "inf", "label_smoothing"),
    ("--devices", "0", "devices"),
    ("--devices", "two", "devices"),
]


@pytest.mark.parametrize(("flag", "value", "name"), BAD_TRAIN_FLAGS)
def test_bad_training_option_is_one_line(
    flag: str, value: str, name: str, tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--data", tree, "--runs-dir", runs, flag, value)
    assert code == 2
    assert_one_line(err, name)
    assert not runs.exists()


@pytest.mark.parametrize("line", ["precision: bogus", "accelerator: bogus", "devices: 0"])
def test_trainer_settings_in_a_config_file_are_checked_first(
    line: str, tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(line + "\n")
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--data", tree, "--runs-dir", runs, "--config", config)
    assert code == 2
    assert_one_line(err, line.split(":")[0])
    assert not runs.exists()


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00\x01", "epochs: 1  # caf\xe9\n".encode("latin-1")]
)
def test_a_config_file_that_is_not_utf8_is_one_line(
    content: bytes, tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--data", tree, "--runs-dir", runs, "--config", config)
    assert code == 2
    assert "not a UTF-8 text file" in assert_one_line(err, config)
    assert not runs.exists()


def test_runs_dir_that_is_a_file(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    code, _, err = run_cli(capsys, "train", "--data", tree, "--runs-dir", runs, "--epochs", "1")
    assert code == 2
    assert "not a folder" in assert_one_line(err, runs)
    assert runs.read_text() == "not a folder"


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_unwritable_runs_dir_fails_before_the_data_is_read(
    code: int,
    tree: Path,
    tmp_path: Path,
    failing_disk: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("ferlab.training.run.load_dataset", not_before_the_check)
    failing_disk(tmp_path, code)
    exit_code, _, err = run_cli(
        capsys, "train", "--data", tree, "--runs-dir", tmp_path / "runs", "--epochs", "1"
    )
    assert exit_code == 2
    assert os.strerror(code).lower() in assert_one_line(err, tmp_path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_resume_from_an_empty_or_truncated_checkpoint(
    content: bytes, tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    TrainConfig(data=str(tree), model="baseline_cnn", runs_dir=str(tmp_path)).save(
        run / "config.yaml"
    )
    (run / "checkpoints" / "last.ckpt").write_bytes(content)
    config = (run / "config.yaml").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", run, "--num-workers", "0")
    assert code == 2
    assert "not a readable checkpoint" in assert_one_line(err, run / "checkpoints" / "last.ckpt")
    assert (run / "config.yaml").read_bytes() == config
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == content
    assert files_below(run) == ["checkpoints", "checkpoints/last.ckpt", "config.yaml"]


def test_resume_refuses_a_config_file_and_other_settings(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(data=str(tree), model="baseline_cnn", runs_dir=str(tmp_path)).save(
        run / "config.yaml"
    )
    (tmp_path / "other.yaml").write_text("lr: 0.5\n")
    code, _, err = run_cli(capsys, "train", "--resume", run, "--config", tmp_path / "other.yaml")
    assert code == 2
    assert f"--config {tmp_path / 'other.yaml'} is for a new run" in assert_one_line(err)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--seed", "7")
    assert code == 2
    assert "--seed 7 (the run's: 0) would make another run" in assert_one_line(err, run)
    assert files_below(run) == ["config.yaml"]


def test_train_and_val_with_different_class_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 2})
    make_pattern_tree(data, {"val": 2}, classes=("joy", "sorrow", "shock"))
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--data", data, "--runs-dir", runs)
    assert code == 2
    line = assert_one_line(err, data / "val")
    assert "has classes that train has not: joy, shock, sorrow" in line
    assert not runs.exists()


# --- evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "compare", "train"])
def test_outputs_inside_the_data_folder_are_refused(
    command: str, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 2, "val": 2, "test": 2})
    before = files_below(data)
    out = data / "reports" if command != "train" else data
    argv = {
        "evaluate": ["evaluate", model_file, "--data", data, "--out", out],
        "compare": ["compare", model_file, model_file.with_name("copy.pt"), "--data", data],
        "train": ["train", "--data", data, "--runs-dir", out / "runs", "--epochs", "1"],
    }[command]
    if command == "compare":
        model_file.with_name("copy.pt").write_bytes(model_file.read_bytes())
        argv += ["--out", out]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "inside the data folder" in assert_one_line(err, data)
    assert files_below(data) == before


def test_evaluate_checks_its_output_folder_before_evaluating(
    model_file: Path,
    tree: Path,
    tmp_path: Path,
    failing_disk: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("ferlab.evaluation.evaluate.load_dataset", not_before_the_check)
    out = tmp_path / "ro" / "eval"
    (tmp_path / "ro").mkdir()
    failing_disk(tmp_path / "ro")
    code, _, err = run_cli(capsys, "evaluate", model_file, "--data", tree, "--out", out)
    assert code == 2
    assert "read-only file system" in assert_one_line(err, tmp_path / "ro")

    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run_cli(capsys, "evaluate", model_file, "--data", tree, "--out", target / "e")
    assert code == 2
    assert "not a folder" in assert_one_line(err, target)


@pytest.mark.parametrize(
    ("command", "fails_at"),
    [
        ("evaluate {model} --data {tree} --out {out}", "metrics.json"),
        ("data inspect {tree} --out {out}", "inspect.json"),
        ("data inspect {tree} --out {out}", "class_distribution.png"),
    ],
    ids=["evaluate", "inspect", "inspect-plot"],
)
def test_a_disk_that_fills_up_leaves_no_partial_file(
    command: str,
    fails_at: str,
    model_file: Path,
    tree: Path,
    tmp_path: Path,
    failing_disk: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    failing_disk(out, errno.ENOSPC, names=(f".{fails_at}.tmp",))
    argv = command.format(model=model_file, tree=tree, out=out).split()
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "no space left on device" in assert_one_line(err, out / fails_at)
    assert not [name for name in files_below(out) if name.startswith(".") or fails_at in name]


@pytest.mark.parametrize(
    "command",
    [
        "evaluate {model} --data {tree} --out {out}",
        "compare {model} {model} --data {tree} --out {out}",
        "explain {face} --model {model} --no-detect --out {out}",
        "export {model} --format onnx --out {out}/model.onnx",
        "data inspect {tree} --out {out}",
        "data convert {tree} {out}/fer.csv",
        "data dedupe {tree} --out {out}/clean.csv",
        "data crop-faces {tree} {out}",
        "predict {face} --model {model} --no-detect --annotate {out}",
        "train --data {tree} --runs-dir {out}",
        "video {video} --model {model} --csv {out}/timeline.csv",
    ],
    ids=lambda command: command.split(" {")[0],
)
def test_output_below_a_file_is_refused_first(
    command: str,
    model_file: Path,
    tree: Path,
    face: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    video = _video(tmp_path / "clip.avi", 3)
    argv = command.format(
        model=model_file, tree=tree, face=face, video=video, out=blocker / "out"
    ).split()
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    line = assert_one_line(err, blocker)
    assert "not a folder" in line or "no such folder" in line
    assert files_below(tmp_path) == ["clip.avi", "file"]


def test_model_file_on_a_full_disk_leaves_nothing(
    bundle: ModelBundle, tmp_path: Path, failing_disk: Callable[..., None]
) -> None:
    failing_disk(tmp_path, errno.ENOSPC, names=(".model.pt",))
    with pytest.raises(OutputError, match=r"model\.pt: no space left on device$"):
        save_model_file(tmp_path / "model.pt", bundle)
    assert files_below(tmp_path) == []


# --- data convert --------------------------------------------------------------------------


@pytest.fixture
def fer_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"]
    for index in range(8):
        pixels = " ".join(map(str, rng.integers(0, 255, 48 * 48)))
        rows.append(f"{index // 2 % 2 + 3},{pixels},{('Training', 'PublicTest')[index % 2]}")
    path = tmp_path / "data" / "fer2013.csv"
    path.parent.mkdir()
    path.write_text("\n".join(rows) + "\n")
    return path


def test_convert_refuses_a_destination_that_holds_the_source(
    fer_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = fer_csv.parent
    (data / "notes.txt").write_text("mine")
    for force in ([], ["--force"]):
        code, _, err = run_cli(capsys, "data", "convert", fer_csv, data, *force)
        assert code == 2
        assert "holds the source" in assert_one_line(err, data)
        assert files_below(data) == ["fer2013.csv", "notes.txt"]


def test_convert_force_replaces_only_an_earlier_output(
    fer_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tree"
    assert run_cli(capsys, "data", "convert", fer_csv, out)[0] == 0
    assert run_cli(capsys, "data", "convert", fer_csv, out, "--force")[0] == 0
    (out / "mine.txt").write_text("mine")
    code, _, err = run_cli(capsys, "data", "convert", fer_csv, out, "--force")
    assert code == 2
    assert "mine.txt" in assert_one_line(err, out)
    assert (out / "mine.txt").read_text() == "mine" and (out / "train").is_dir()


@pytest.mark.parametrize(
    "own",
    ["train/happy/vacation.png", "train/foo/g.jpg", "val/happy/notes.txt", "test/Training_1.png"],
)
def test_convert_exist_ok_never_deletes_a_data_set_of_the_users(
    fer_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], own: str
) -> None:
    photos = tmp_path / "photos"
    (photos / own).parent.mkdir(parents=True)
    (photos / own).write_bytes(b"a holiday photo")
    code, _, err = run_cli(capsys, "data", "convert", fer_csv, photos, "--exist-ok")
    assert code == 2
    line = assert_one_line(err, photos)
    assert own in line or f"({Path(own).parent})" in line
    assert [name for name in files_below(photos) if (photos / name).is_file()] == [own]
    assert (photos / own).read_bytes() == b"a holiday photo"


def test_convert_to_the_working_folder_is_refused_in_one_line(
    fer_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    (here / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "data", "convert", fer_csv, ".", "--exist-ok")
    assert code == 2 and "notes.txt" in assert_one_line(err, here)
    assert files_below(here) == ["notes.txt"]


@pytest.mark.parametrize(
    ("code", "names"),
    [(errno.EROFS, ()), (errno.ENOSPC, ()), (errno.ENOSPC, ("PublicTest_00001.png",))],
    ids=["read-only", "full", "fills-midway"],
)
def test_convert_to_a_failing_disk_leaves_nothing(
    code: int,
    names: tuple[str, ...],
    fer_csv: Path,
    tmp_path: Path,
    failing_disk: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    failing_disk(out, code, names=names)
    exit_code, _, err = run_cli(capsys, "data", "convert", fer_csv, out / "tree")
    assert exit_code == 2
    assert os.strerror(code).lower() in assert_one_line(err, out)
    assert files_below(out) == []


def test_convert_onto_a_really_full_disk(
    fer_csv: Path, tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "data", "convert", fer_csv, tiny_tmpfs / "tree")
    assert code == 2
    assert "no space left on device" in assert_one_line(err, tiny_tmpfs / "tree")
    assert files_below(tiny_tmpfs) == []


def test_csv_without_a_header_gives_a_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "headless.csv"
    pixels = " ".join(["128"] * 48 * 48)
    path.write_text("".join(f"3,{pixels},Training\n" for _ in range(3)))
    code, _, err = run_cli(capsys, "data", "inspect", path, "--out", tmp_path / "inspect")
    assert code == 2
    line = assert_one_line(err, path)
    assert "unexpected CSV header" in line and len(line) < 300


# --- predict -------------------------------------------------------------------------------


def _photos(folder: Path, names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 48), 100, np.uint8)).save(path)
        paths.append(path)
    return paths


def test_annotate_into_a_read_only_folder_fails_before_predicting(
    model_file: Path,
    tmp_path: Path,
    failing_disk: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    (face,) = _photos(tmp_path, ["in/a.png"])
    out = tmp_path / "annotated"
    failing_disk(tmp_path)
    argv = ["predict", face, "--model", model_file, "--no-detect", "--annotate", out]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 2
    assert stdout == ""
    assert_one_line(err, tmp_path)


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_failed_write_is_an_error_line_and_the_rest_go_on(
    command: str,
    model_file: Path,
    tmp_path: Path,
    failing_disk: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    faces = _photos(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "written"
    out.mkdir()
    failing_disk(out, errno.ENOSPC, names=(".b.", ".b_"))
    flag = "--annotate" if command == "predict" else "--out"
    argv = [command, *faces, "--model", model_file, "--no-detect", flag, out]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 1
    per_photo = 1 if command == "predict" else 2  # explain: the photo and the face crop
    assert len(stdout.splitlines()) == (3 if command == "predict" else 2 * per_photo)
    (line,) = err.splitlines()[:1]
    assert line.startswith(f"ferlab: error: {out / 'b'}")
    assert line.endswith(": no space left on device")
    assert [name[0] for name in files_below(out)] == ["a"] * per_photo + ["c"] * per_photo


def test_annotate_gives_same_named_inputs_distinct_outputs(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _photos(tmp_path, ["one/face.png", "two/face.png"])
    out = tmp_path / "one"
    argv = ["predict", first, second, "--model", model_file, "--no-detect", "--annotate", out]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert files_below(out) == ["face-2.png", "face-3.png", "face.png"]
    assert err.strip() == (
        f"ferlab: 2 annotated image(s) numbered, as {out} held the name: "
        "face.png as face-2.png, face.png as face-3.png"
    )
    assert np.asarray(Image.open(first)).max() == 100  # the input itself was not written over


def test_unreadable_sub_folder_is_reported(
    model_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _photos(tmp_path / "photos", ["a.png", "locked/b.png"])
    locked = tmp_path / "photos" / "locked"
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    argv = ["predict", tmp_path / "photos", "--model", model_file, "--no-detect"]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 1
    assert len(stdout.splitlines()) == 1
    assert f"ferlab: error: {locked}: cannot read folder (permission denied)" in err


# --- video ---------------------------------------------------------------------------------


def _video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_video_whose_stream_breaks_is_a_partial_result(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = _video(tmp_path / "whole.avi", 20).read_bytes()
    frames = [i for i in range(len(whole)) if whole[i : i + 4] == b"00dc"]
    broken = tmp_path / "broken.avi"
    broken.write_bytes(whole[: frames[2]])  # the header, its first chunk list, one frame
    csv_path = tmp_path / "timeline.csv"
    code, out, err = run_cli(capsys, "video", broken, "--model", model_file, "--csv", csv_path)
    assert code == 1
    assert "1 of 20 declared frames read" in assert_one_line(err, broken)
    assert csv_path.is_file()
    assert out.startswith(f"{broken}: 1 frames")


@pytest.mark.slow
def test_video_terminated_leaves_no_partial_files(model_file: Path, tmp_path: Path) -> None:
    video = _video(tmp_path / "long.avi", 3000)
    out = tmp_path / "out"
    timeline, annotated = out / "timeline.csv", out / "annotated.avi"
    process = subprocess.Popen(
        ferlab_command(
            "video", video, "--model", model_file, "--csv", timeline, "--out", annotated
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(".*partial*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(out.glob(".*partial*")), "the video never started"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == "ferlab: terminated"
    assert "Traceback" not in err
    assert files_below(out) == []


def test_a_list_that_is_not_text_is_refused_before_any_output(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photo,) = _photos(tmp_path, ["a.png"])
    out = tmp_path / "results.csv"
    base = ["predict", "--model", model_file, "--no-detect", "--out", out, "--list"]
    code, _, err = run_cli(capsys, *base, photo)
    assert code == 2
    assert err == (
        f"ferlab: error: {photo}: not a text file of paths (byte 0 is not UTF-8 text); "
        "--list takes one image path a line\n"
    )
    nul = tmp_path / "paths.txt"
    nul.write_bytes(b"a.png\nb\x00c\n")
    code, _, err = run_cli(capsys, *base, nul)
    assert code == 2 and "paths.txt: not a text file of paths (byte 7 " in err
    code, _, err = run_cli(capsys, *base, tmp_path)
    assert code == 2 and err == (
        f"ferlab: error: {tmp_path}: not a file; --list takes a text file of paths\n"
    )
    assert not out.exists()
    late = tmp_path / "late.txt"
    late.write_bytes(f"{photo}\n".encode() * 20000 + b"\xff\n")
    code, _, err = run_cli(capsys, "predict", "--model", model_file, "--no-detect", "--list", late)
    assert code == 2 and err.endswith(
        f"ferlab: error: {late}: not a text file of paths; --list takes one image path a line\n"
    )


def test_annotated_copies_of_files_named_in_other_encodings(
    model_file: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    (photo,) = _photos(tmp_path / "in", ["a.png"])
    odd = Path(os.fsdecode(bytes(tmp_path / "in") + b"/caf\xe9.png"))
    photo.rename(odd)
    out = tmp_path / "annotated"
    code = main(
        [
            "predict",
            str(odd),
            "--model",
            str(model_file),
            "--no-detect",
            "--annotate",
            str(out),
            "-q",
        ]
    )
    printed = capfdbinary.readouterr()
    assert code == 0, printed.err
    assert printed.out.startswith(bytes(odd) + b"  whole image  ")
    (written,) = out.iterdir()
    assert os.fsencode(written.name) == b"caf\xe9.png"
    assert Image.open(written).size == Image.open(odd).size


def test_a_channels_first_array_is_refused_with_a_hint(model_file: Path, tmp_path: Path) -> None:
    from ferlab import Recognizer
    from ferlab.errors import DataError

    recognizer = Recognizer.load(model_file, detect=False)
    image = np.zeros((3, 64, 64), np.uint8)
    with pytest.raises(DataError, match=r"got \(3, 64, 64\); for a channels-first"):
        recognizer.predict(image)
    with pytest.raises(DataError, match=r"expected an \(H, W\) or \(H, W, 3\|4\) array"):
        recognizer.predict(np.zeros((64, 64, 5), np.uint8))
    with pytest.raises(DataError, match="a folder, not an image file"):
        recognizer.predict(tmp_path)


def test_explain_draws_a_file_name_in_another_encoding(
    model_file: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    (photo,) = _photos(tmp_path / "in", ["a.png"])
    photo.rename(os.fsdecode(bytes(tmp_path / "in") + b"/caf\xe9.png"))
    out = tmp_path / "explained"
    argv = ["explain", str(tmp_path / "in"), "--model", str(model_file), "--no-detect"]
    code = main([*argv, "--out", str(out), "-q"])
    printed = capfdbinary.readouterr()
    assert code == 0, printed.err
    assert sorted(os.fsencode(p.name) for p in out.iterdir())[0] == b"caf\xe9_explained.png"


@pytest.mark.parametrize("command", ["inspect", "train"])
def test_a_class_folder_named_in_another_encoding_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    from conftest import make_pattern_tree

    tree = make_pattern_tree(tmp_path / "data", {"train": 3, "val": 2})
    (tree / "train" / "sad").rename(os.fsdecode(bytes(tree / "train") + b"/f\xe9ar"))
    argv = {
        "inspect": ["data", "inspect", str(tree), "--out", str(tmp_path / "report")],
        "train": [
            "train",
            "--data",
            str(tree),
            "--model",
            "baseline_cnn",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    }[command]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    line = assert_one_line(err, f"{tree}/train/f\\xe9ar: a class folder whose name is not UTF-8")
    assert "rename it" in line
    assert not (tmp_path / "report").exists() and not (tmp_path / "runs").exists()
