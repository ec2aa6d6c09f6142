"""The run folder's layout, numbering and records, without training."""

from __future__ import annotations

import json
from pathlib import Path

from ferlab.config import TrainConfig
from ferlab.run_folder import BEST, LAST, RunFolder


def test_a_new_run_is_numbered_when_its_name_is_taken(tmp_path: Path) -> None:
    assert RunFolder.new(tmp_path, "cnn").path == tmp_path / "cnn"
    (tmp_path / "cnn").mkdir()
    assert RunFolder.new(tmp_path, "cnn").path == tmp_path / "cnn-2"
    assert not (tmp_path / "cnn-2").exists()


def test_files_of_a_run(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    assert run.checkpoint(LAST) == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert run.relative(run.checkpoint(BEST)) == "checkpoints/best.ckpt"
    assert run.eval_dir("test") == tmp_path / "run" / "eval-test"
    assert [p.name for p in run.records] == [
        "config.yaml",
        "classes.json",
        "metrics.csv",
        "run.json",
    ]


def test_a_model_file_is_in_a_run_once_its_config_is_written(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    assert RunFolder.of_model(run.model_file) is None
    run.write_setup(TrainConfig(), {"classes": ["a", "b"]})
    assert RunFolder.of_model(run.model_file) == run
    assert json.loads(run.classes.read_text()) == {"classes": ["a", "b"]}


def test_sessions_are_appended_and_closed_in_run_json(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    for first in (0, 3):
        sessions = run.sessions()
        run.start_session(sessions, {"start_epoch": first}, model="cnn")
        run.end_session(sessions, first + 3, 1.04, best_val_acc=0.5)
    summary = json.loads(run.summary.read_text())
    assert [s["start_epoch"] for s in summary["sessions"]] == [0, 3]
    assert [s["session"] for s in summary["sessions"]] == [0, 1]
    assert summary["epochs_completed"] == 6 and summary["train_seconds"] == 2.0
    assert run.train_seconds(run.model_file) == 2.0
    assert run.train_seconds(tmp_path / "other.pt") is None
    run.summary.write_text("{not json")
    assert run.train_seconds(run.model_file) is None


def test_metrics_rows_of_a_run_without_epochs(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert run.metrics_rows() == []
    run.metrics.write_text("epoch,val_acc\n0,0.5\n")
    assert run.metrics_rows() == [{"epoch": "0", "val_acc": "0.5"}]
