"""Every file a command reads is loaded weights-only: a pickle that would run code never runs, and
the refusal is one line (exit 2). Payloads: a torch zip file and a bare pickle, each with an
object whose unpickling touches a marker file."""

from __future__ import annotations

import pickle
import runpy
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import REPO, RunsCode
from ferlab.cli import main
from ferlab.data.cache import decode_split
from ferlab.data.sources import load_dataset

PAYLOAD_KINDS = ("torch-zip", "bare-pickle")


def plant(path: Path, marker: Path, kind: str) -> None:
    """Replace ``path`` with a file whose unpickling creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch-zip":
        state = {"epoch": 0, "global_step": 1, "state_dict": {}, "payload": RunsCode(marker)}
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(RunsCode(marker)))


def test_the_payloads_are_live(tmp_path: Path) -> None:
    for kind in PAYLOAD_KINDS:
        marker = tmp_path / f"ran-{kind}"
        plant(tmp_path / f"{kind}.pt", marker, kind)
        with (tmp_path / f"{kind}.pt").open("rb") as handle:
            if kind == "torch-zip":
                torch.load(handle, weights_only=False)
            else:
                pickle.load(handle)
        assert marker.exists()


def snapshot(run: Path, target: Path) -> int:
    """scripts/snapshot_run.py RUN TARGET, in this process; its exit code."""
    argv = sys.argv
    sys.argv = ["snapshot_run.py", str(run), str(target)]
    try:
        runpy.run_path(str(REPO / "scripts" / "snapshot_run.py"), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = argv
    return 0


def _ferlab(*args: object) -> Callable[[], int]:
    return lambda: main([str(a) for a in args])


def _cases(run: Path, data: Path, tmp: Path) -> dict[str, tuple[Path, Callable[[], int]]]:
    """name: (file given the payload, the command that reads it)."""
    image = data / "val" / "happy" / "000.png"
    train_new = ("train", f"--data={data}", "--model=baseline_cnn", "--epochs=1")
    return {
        "resume: last.ckpt": (run / "checkpoints" / "last.ckpt", _ferlab("train", "--resume", run)),
        "resume: best.ckpt": (run / "checkpoints" / "best.ckpt", _ferlab("train", "--resume", run)),
        "evaluate: the run's model.pt": (
            run / "model.pt",
            _ferlab("evaluate", run, f"--data={data}", "--split=val", f"--out={tmp / 'eval'}"),
        ),
        "predict: --model FILE": (
            tmp / "model.pt",
            _ferlab("predict", "--model", tmp / "model.pt", "--no-detect", image),
        ),
        "train: --weights FILE": (
            tmp / "weights.pth",
            _ferlab(*train_new, f"--weights={tmp / 'weights.pth'}", f"--runs-dir={tmp / 'runs'}"),
        ),
        "snapshot: last.ckpt": (
            run / "checkpoints" / "last.ckpt",
            lambda: snapshot(run, tmp / "snapshot"),
        ),
        "snapshot: best.ckpt": (
            run / "checkpoints" / "best.ckpt",
            lambda: snapshot(run, tmp / "snapshot"),
        ),
    }


CASES = list(_cases(Path("run"), Path("data"), Path("tmp")))


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@pytest.mark.parametrize("case", CASES)
def test_no_command_runs_code_from_a_file(
    pattern_run: Path,
    pattern_tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    kind: str,
) -> None:
    run = shutil.copytree(pattern_run, tmp_path / "run")
    if case.startswith("resume"):  # as an interruption leaves a run: no model.pt yet
        (run / "model.pt").unlink()
    file, command = _cases(run, pattern_tree, tmp_path)[case]
    marker = tmp_path / "ran"
    plant(file, marker, kind)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()

    with warnings.catch_warnings(record=True) as warned:  # on the console, each a line more
        warnings.simplefilter("always")
        code = command()

    err = capsys.readouterr().err
    assert not marker.exists()
    assert not [str(w.message) for w in warned]
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and str(file.name) in lines[0], err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "runs").exists() and not (tmp_path / "snapshot").exists()


def test_a_decode_cache_with_code_is_rebuilt_not_run(pattern_tree: Path, tmp_path: Path) -> None:
    table = load_dataset(pattern_tree).splits["val"]
    decoded = decode_split(table, image_size=48, cache_dir=tmp_path)
    entries = list(tmp_path.glob("*.pt"))
    assert len(entries) == 1
    for kind in PAYLOAD_KINDS:
        marker = tmp_path / f"ran-{kind}"
        plant(entries[0], marker, kind)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            again = decode_split(table, image_size=48, cache_dir=tmp_path)
        assert not marker.exists()
        assert not [str(w.message) for w in warned]
        assert torch.equal(again.images, decoded.images)
        assert torch.equal(torch.load(entries[0], weights_only=True)["images"], decoded.images)
