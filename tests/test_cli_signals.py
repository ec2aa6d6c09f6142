"""A command stopped by SIGINT or SIGTERM says so in one line and exits 128 + the signal."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ferlab.cli import main


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [(signal.SIGTERM, 143, "ferlab: terminated"), (signal.SIGINT, 130, "ferlab: interrupted")],
)
def test_a_command_stopped_by_a_signal_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signum: int,
    code: int,
    line: str,
) -> None:
    def stopped_midway(args: object) -> int:
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the signal's handler raises long before this ends
        return 0

    monkeypatch.setattr("ferlab.commands.models._run_models", stopped_midway)
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    assert main(["models"]) == code
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err.splitlines() == [line]
    assert signal.getsignal(signal.SIGTERM) is before
