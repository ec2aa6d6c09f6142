"""scripts/teacher_labels.py: a teacher's probabilities mixed with crowd votes, for distillation."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

VOTES = [
    "file,ferplus_image,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF",
    "train/happy/a.png,x,2,6,0,0,0,0,0,0,2,0",
    "train/sad/b.png,x,0,0,0,8,0,0,0,0,0,0",
    "train/sad/c.png,x,0,0,0,2,0,0,0,0,8,0",
    "val/happy/d.png,x,1,9,0,0,0,0,0,0,0,0",
]
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]


def _run(tmp_path: Path, weight: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    data = tmp_path / "data"
    votes = tmp_path / "votes.csv"
    votes.write_text("\n".join(VOTES) + "\n")
    predictions = tmp_path / "predictions.csv"
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true", "predicted", *(f"p_{c}" for c in CLASSES), "correct"])
        happy = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0]
        sad = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        writer.writerow([str(data / "train/happy/a.png"), "happy", "happy", *happy, 1])
        writer.writerow([str(data / "train/sad/b.png"), "sad", "sad", *sad, 1])
    out = tmp_path / "mixed.csv"
    command = [sys.executable, str(REPO / "scripts" / "teacher_labels.py"), str(predictions)]
    command += ["--data", str(data), "--labels", str(votes), "--teacher-weight", weight]
    command += ["--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, check=False), out


def test_teacher_and_crowd_are_mixed_for_the_scored_training_images(tmp_path: Path) -> None:
    done, out = _run(tmp_path, "0.25")
    assert done.returncode == 0, done.stderr
    assert "2 training images relabelled (teacher 0.25)" in done.stdout
    rows = list(csv.DictReader(out.open()))
    a, b, c, d = rows
    # a: crowd over the expressions 2/8 neutral, 6/8 happy; teacher half and half
    assert float(a["happiness"]) == pytest.approx(0.25 * 0.5 + 0.75 * 0.75, abs=1e-5)
    assert float(a["neutral"]) == pytest.approx(0.25 * 0.5 + 0.75 * 0.25, abs=1e-5)
    assert (a["unknown"], a["NF"], a["ferplus_image"]) == ("0", "0", "x")
    assert float(b["sadness"]) == pytest.approx(1.0) and float(b["neutral"]) == 0
    assert list(c.values()) == VOTES[3].split(",")  # not scored: unchanged
    assert list(d.values()) == VOTES[4].split(",")


def test_bad_arguments_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    done, out = _run(tmp_path, "1.5")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--teacher-weight: must be in (0, 1]" in done.stderr and not out.exists()
