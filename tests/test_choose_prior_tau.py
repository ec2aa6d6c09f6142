"""scripts/choose_prior_tau.py: the τ sweep and the rule that picks the shipped τ."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import numpy as np
import pytest

from conftest import REPO


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tau", REPO / "scripts/choose_prior_tau.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_sweep_against_hand_computed_values() -> None:
    script = _script()
    prior = np.array([0.8, 0.2])
    second = np.array([0.3, 0.45, 0.1, 0.4])
    probs = np.stack([1 - second, second], axis=1)
    labels = np.array([0, 0, 0, 1])
    rows = script.sweep(probs, labels, prior, [0.5, 1.0])
    # Class 1 wins where p1 / 0.2**tau > p0 / 0.8**tau: p1 > 0.5 (tau 0), p1 > 1/3 (tau 0.5),
    # p1 > 0.2 (tau 1).
    assert [row.tau for row in rows] == [0.0, 0.5, 1.0]
    assert [row.accuracy for row in rows] == pytest.approx([0.75, 0.75, 0.5])
    assert [row.balanced for row in rows] == pytest.approx([0.5, (2 / 3 + 1) / 2, (1 / 3 + 1) / 2])
    assert [row.answered_common for row in rows] == pytest.approx([1.0, 0.5, 0.25])
    assert script.choose(rows, 0.0).tau == 0.5


def test_choose_keeps_accuracy_within_the_allowed_drop() -> None:
    script = _script()
    score = script.TauScore
    rows = [
        score(0.0, 0.8503, 0.6807, 0.7164, 0.39),
        score(0.1, 0.8495, 0.6962, 0.7242, 0.377),
        score(0.3, 0.8455, 0.7197, 0.7223, 0.355),
        score(1.0, 0.7404, 0.7741, 0.6098, 0.234),
    ]
    assert script.choose(rows, 0.0).tau == 0.0
    assert script.choose(rows, 0.001).tau == 0.1
    assert script.choose(rows, 0.005).tau == 0.3
    assert script.choose(rows, 1.0).tau == 1.0
    tied = [score(0.0, 0.8, 0.7, 0.7, 0.4), score(0.2, 0.8, 0.7, 0.7, 0.4)]
    assert script.choose(tied, 0.0).tau == 0.0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--taus", "0,abc", "could not convert"),
        ("--taus", "0,3", "prior-tau must be in"),
        ("--max-accuracy-drop", "2", "not a fraction in [0, 1]"),
        ("--max-accuracy-drop", "x", "not a fraction in [0, 1]"),
    ],
)
def test_bad_options_are_one_line_errors(flag: str, value: str, message: str) -> None:
    command = [sys.executable, str(REPO / "scripts/choose_prior_tau.py"), "m.pt", "--data", "d"]
    result = subprocess.run([*command, flag, value], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
