"""Progress bars: one style on stderr, only where a command turned them on and stderr is a
terminal; the training console's own lines."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from conftest import quick_options
from ferlab.progress import bar, shown, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_show_only_when_turned_on_and_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(track(range(3), "decode")) == [0, 1, 2]
    assert terminal.getvalue() == ""
    with shown(False):
        assert list(track(range(3), "decode")) == [0, 1, 2]
    assert terminal.getvalue() == ""
    with shown(), bar("score", 5, unit="images") as outer:
        assert list(track([1, 2], "decode train")) == [1, 2]
        outer.advance(5)
        outer.note("12 faces")
    drawn = terminal.getvalue()
    assert "decode train" in drawn and "score" in drawn
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with shown():
        assert list(track(range(2), "decode")) == [0, 1]
    assert sys.stderr.getvalue() == ""


def test_training_console_reads_as_ferlab(
    pattern_tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ferlab.cli import main

    options = quick_options(pattern_tree, tmp_path, epochs=2, limit_per_class=8)
    argv = ["train", *[f"--{k.replace('_', '-')}={v}" for k, v in options.items()]]
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"data: {pattern_tree} (folders), 3 classes: happy, sad, surprise"
    assert lines[1] == "images: train 24, val 24, test 24 held out (train at most 8 per class)"
    assert lines[2].startswith("pixels: 48x48 gray, model input 48x48; ")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(line.count("train_loss ") == 1 and "val_acc " in line for line in epochs)
    assert "total left" in epochs[0]
    logged = "".join(record.getMessage() for record in caplog.records)
    assert not any(word in out + err + logged for word in ("v_num", "GPU available", "TPU avail"))
