"""No command writes over its inputs, the installed package or an earlier output unless
``--exist-ok`` says so; default output folders and files are numbered when taken."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import make_pattern_tree
from ferlab.cli import main
from ferlab.errors import OutputError
from ferlab.outputs import check_new, check_not_input, check_writable, numbered


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path``, made the working folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("ferlab: warning:")]
    assert len(lines) == 1 and lines[0].startswith("ferlab: error: "), err
    return lines[0]


def test_numbered_skips_taken_folders_and_files(tmp_path: Path) -> None:
    assert numbered(tmp_path / "eval") == tmp_path / "eval"
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval-2").mkdir()
    assert numbered(tmp_path / "eval") == tmp_path / "eval-3"
    (tmp_path / "m.onnx").write_bytes(b"")
    assert numbered(tmp_path / "m.onnx", file=True) == tmp_path / "m-2.onnx"


def test_check_new_and_check_not_input(tmp_path: Path) -> None:
    taken = tmp_path / "metrics.json"
    taken.write_text("{}")
    check_new([tmp_path / "free.json"], exist_ok=False)
    check_new([taken], exist_ok=True)
    with pytest.raises(OutputError, match=r"metrics.json: already exists; give --exist-ok"):
        check_new([tmp_path / "free.json", taken], exist_ok=False)
    with pytest.raises(OutputError, match="one of the inputs"):
        check_not_input(tmp_path / "." / "metrics.json", {taken.resolve()})


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_unwritable_folder_is_named_with_the_output_it_stops(tmp_path: Path) -> None:
    with pytest.raises(OutputError) as raised:
        check_writable("/proc/ferlab-x/out")
    assert str(raised.value) == (
        "/proc: cannot write to this folder (no such file or directory), "
        "so /proc/ferlab-x/out cannot be made"
    )
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"file: not a folder, so .*file/out cannot be made"):
        check_writable(tmp_path / "file" / "out")


def test_evaluate_numbers_default_folders_and_keeps_reports(
    pattern_model: Path, pattern_tree: Path, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", pattern_model, "--data", pattern_tree, "--quiet"]
    assert run(capsys, *argv)[0] == 0
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "wrote evaluations/model-test-2/" in out
    first = here / "evaluations" / "model-test" / "metrics.json"
    before = first.read_bytes()
    code, _, err = run(capsys, *argv, "--out", first.parent)
    assert code == 2 and "give --exist-ok" in error_line(err)
    assert first.read_bytes() == before
    assert run(capsys, *argv, "--out", first.parent, "--exist-ok")[0] == 0


def test_evaluate_writes_its_report_whole_or_not_at_all(
    pattern_model: Path,
    pattern_tree: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ferlab.evaluation import evaluate

    write_report = evaluate.write_report

    def fail_midway(out_dir: Path, *args: Any) -> None:
        write_report(out_dir, *args)
        raise OutputError(f"{out_dir / 'report.html'}: no space left on device")

    def files(folder: Path) -> dict[str, bytes]:
        found = (p for p in folder.rglob("*") if p.is_file())
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in found}

    out = tmp_path / "eval"
    argv = ["evaluate", pattern_model, "--data", pattern_tree, "--out", out, "--quiet"]
    monkeypatch.setattr(evaluate, "write_report", fail_midway)
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"{out / 'report.html'}: no space left on device" in error_line(err)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / ".eval.partial").mkdir()  # what a killed run leaves
    (tmp_path / ".eval.partial" / "metrics.json").write_text("{")
    monkeypatch.setattr(evaluate, "write_report", write_report)
    assert run(capsys, *argv)[0] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]
    names = {"metrics.json", "predictions.csv", "report.md", "report.html", "plots"}
    assert {p.name for p in out.iterdir()} == names
    (out / "plots" / "stale.png").write_bytes(b"old")
    before = files(out)

    monkeypatch.setattr(evaluate, "write_report", fail_midway)
    assert run(capsys, *argv, "--exist-ok")[0] == 2
    assert files(out) == before and [p.name for p in tmp_path.iterdir()] == ["eval"]
    monkeypatch.setattr(evaluate, "write_report", write_report)
    assert run(capsys, *argv, "--exist-ok")[0] == 0
    assert {p.name for p in out.iterdir()} == names
    assert files(out).keys() == before.keys() - {"plots/stale.png"}


def test_evaluate_without_the_split_suggests_val(
    pattern_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 2, "val": 2})
    code, _, err = run(capsys, "evaluate", pattern_model, "--data", data, "--out", tmp_path / "e")
    assert code == 2
    assert "no 'test' split (have train, val); score another with --split val" in error_line(err)


def test_export_writes_here_numbered_never_into_the_package(
    pattern_model: Path,
    here: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ferlab.inference import onnx_export

    targets: list[Path] = []

    def record(model_file: Path, out: Path, *args: object, **kwargs: object) -> Path:
        targets.append(out)  # the target is the point here, not the export (tested elsewhere)
        out.write_bytes(b"onnx")
        return out

    monkeypatch.setattr(onnx_export, "export_onnx", record)
    assert run(capsys, "export", "default")[0] == 0
    assert targets == [Path("default.onnx")] and (here / "default.onnx").read_bytes() == b"onnx"
    for name in ("model.onnx", "model-2.onnx"):
        code, out, _ = run(capsys, "export", pattern_model)
        assert code == 0 and out.startswith(f"wrote {name} ")
    before = (here / "model.onnx").read_bytes()
    code, _, err = run(capsys, "export", pattern_model, "--out", "model.onnx")
    assert code == 2 and "model.onnx: already exists; give --exist-ok" in error_line(err)
    assert (here / "model.onnx").read_bytes() == before and len(targets) == 3
    assert run(capsys, "export", pattern_model, "--out", "model.onnx", "--exist-ok")[0] == 0
    model_bytes = pattern_model.read_bytes()
    code, _, err = run(capsys, "export", pattern_model, "--out", pattern_model, "--exist-ok")
    assert code == 2 and "--out must be a file name ending in .onnx" in error_line(err)
    assert pattern_model.read_bytes() == model_bytes


def test_int8_export_prints_its_agreement_and_warns_below_the_floor(
    pattern_model: Path,
    pattern_tree: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ferlab.commands import export

    argv = ["export", pattern_model, "--quantize", "int8", "--calibration", pattern_tree / "val"]
    code, out, err = run(capsys, *argv, "--out", tmp_path / "a.onnx")
    share = float(out.split("agreement with the float model: ")[1].split("%")[0]) / 100
    assert code == 0 and "on 24 calibration crops" in out
    assert ("ferlab: warning: the int8 export changes" in err) == (share < 0.99)
    monkeypatch.setattr(export, "AGREEMENT_FLOOR", 1.01)
    code, _, err = run(capsys, *argv, "--out", tmp_path / "b.onnx")
    assert code == 0 and "below 101% agreement" in err


def test_compare_keeps_an_earlier_comparison(
    pattern_model: Path, pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", pattern_model, "--data", pattern_tree, "--out", tmp_path]
    assert run(capsys, *argv)[0] == 0
    before = (tmp_path / "compare.md").read_bytes()
    code, _, err = run(capsys, *argv)
    assert code == 2 and "compare.md: already exists; give --exist-ok" in error_line(err)
    assert (tmp_path / "compare.md").read_bytes() == before
    assert run(capsys, *argv, "--exist-ok")[0] == 0


def test_explain_keeps_earlier_heatmaps(
    pattern_model: Path, pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crop = next((pattern_tree / "test" / "happy").iterdir())
    argv = ["explain", crop, "--model", pattern_model, "--no-detect", "--out", tmp_path]
    assert run(capsys, *argv)[0] == 0
    pictures = sorted(tmp_path.glob("*.png"))  # the whole image and the face crop
    assert len(pictures) == 2
    before = [picture.read_bytes() for picture in pictures]
    code, _, err = run(capsys, *argv)
    (line,) = err.strip().splitlines()  # one for the photo, naming its first picture there
    assert code == 2
    assert line == f"ferlab: error: {pictures[0]}: already exists; give --exist-ok to write over it"
    assert [picture.read_bytes() for picture in pictures] == before
    assert run(capsys, *argv, "--exist-ok")[0] == 0
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(crop, twin / crop.name)
    argv = ["explain", crop, twin / crop.name, "--model", pattern_model, "--no-detect"]
    assert run(capsys, *argv, "--out", tmp_path / "both")[0] == 0
    assert len(list((tmp_path / "both").glob("*.png"))) == 4


def test_inspect_numbers_its_default_folder(
    pattern_tree: Path, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"inspect-{pattern_tree.name}"
    assert run(capsys, "data", "inspect", pattern_tree)[0] == 0
    code, out, _ = run(capsys, "data", "inspect", pattern_tree)
    assert code == 0 and f"wrote {name}-2/inspect.json" in out
    code, _, err = run(capsys, "data", "inspect", pattern_tree, "--out", name)
    assert code == 2 and "inspect.json: already exists; give --exist-ok" in error_line(err)
    assert run(capsys, "data", "inspect", pattern_tree, "--out", name, "--exist-ok")[0] == 0


def test_video_refuses_to_write_nothing_over_its_input_or_earlier_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded: the outputs are checked first")
    code, _, err = run(capsys, "video", clip)
    assert code == 2 and "nothing would be written: give --out FILE.mp4" in error_line(err)
    code, _, err = run(capsys, "video", clip, "--out", clip, "--exist-ok")
    assert code == 2 and "one of the inputs" in error_line(err)
    timeline = tmp_path / "clip.csv"
    timeline.write_text("earlier")
    code, _, err = run(capsys, "video", clip, "--csv", timeline)
    assert code == 2 and "clip.csv: already exists; give --exist-ok" in error_line(err)
    assert timeline.read_text() == "earlier"
    code, _, err = run(capsys, "video", clip, "--out-dir", tmp_path)
    assert code == 2 and "clip.csv: already exists" in error_line(err)


def test_serve_on_a_taken_port_fails_before_loading_the_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ferlab.apps import server

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(server, "create_app", never)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, err = run(capsys, "serve", "--port", port)
    assert code == 2
    assert error_line(err).startswith(f"ferlab: error: port {port} is in use on 127.0.0.1")


def test_mistyped_strategy_is_one_line_with_a_suggestion(
    pattern_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", pattern_tree, "--runs-dir", tmp_path, "--strategy", "fine-tune"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "unknown strategy 'fine-tune'; did you mean 'finetune'?" in error_line(err)
    assert not any(tmp_path.iterdir())


def test_convert_takes_exist_ok_as_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_pattern_tree(tmp_path / "tree", {"train": 1, "val": 1}, ("happy", "sad"))
    out = tmp_path / "fer.csv"
    assert run(capsys, "data", "convert", tree, out)[0] == 0
    code, _, err = run(capsys, "data", "convert", tree, out)
    assert code == 2 and "give --exist-ok to replace it" in error_line(err)
    assert run(capsys, "data", "convert", tree, out, "--exist-ok")[0] == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "emotion,pixels,Usage" and len(rows) == 5
