"""`ferlab predict --out`: results streamed to JSON Lines, CSV or Parquet, resumed, sharded."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import PATTERN_CLASSES, pattern_image
from ferlab.cli import main
from ferlab.errors import ConfigError
from ferlab.inference import results_file
from ferlab.inference.bulk import parse_shard, take_shard
from ferlab.inference.image_results import CSV_COLUMNS
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 pattern images in two folders and one file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for index in range(13):
        folder = root / ("a" if index < 7 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray(pattern_image(index % 3, rng)).save(folder / f"{index:02d}.png")
    (root / "b" / "broken.png").write_text("not an image")
    return root


def predict(model: Path, *args: str) -> int:
    return main(["predict", *args, "--model", str(model), "--no-detect", "--batch-size", "4"])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_is_resumed_after_an_interruption(
    pattern_model: Path, photos_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = tmp_path / "whole.jsonl"
    assert predict(pattern_model, str(photos_dir), "--out", str(whole)) == 1  # broken.png
    err = capsys.readouterr().err
    assert "broken.png: not an image file" in err and "1 of 14 inputs could not be read" in err
    records = jsonl(whole)
    assert [r["path"] for r in records] == sorted(str(p) for p in photos_dir.rglob("[0-9]*.png"))
    assert all(len(r["faces"]) == 1 and r["faces"][0]["box"] is None for r in records)

    cut = tmp_path / "cut.jsonl"
    lines = whole.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:5]) + lines[5][:40])  # killed while writing line 6
    assert predict(pattern_model, str(photos_dir), "--out", str(cut)) == 2
    assert "cut.jsonl: exists; add --resume" in capsys.readouterr().err
    assert predict(pattern_model, str(photos_dir), "--out", str(cut), "--resume") == 1
    assert f"8 image(s) written to {cut}; 5 were there already" in capsys.readouterr().err
    resumed = jsonl(cut)
    assert len(resumed) == 13
    for got, want in zip(resumed, records, strict=True):
        assert got["path"] == want["path"]
        assert got["faces"][0]["probs"] == pytest.approx(want["faces"][0]["probs"], abs=1e-6)
    assert predict(pattern_model, str(photos_dir), "--out", str(cut), "--resume") == 2
    assert "1 of 1 inputs could not be read" in capsys.readouterr().err  # broken.png, again
    assert jsonl(cut) == resumed
    (tmp_path / "other.jsonl").write_text("path,face\n")
    assert (
        predict(pattern_model, str(photos_dir), "--out", str(tmp_path / "other.jsonl"), "--resume")
        == 2
    )
    assert "other.jsonl: line 1 is not a result record; cannot resume" in capsys.readouterr().err


def test_csv_and_parquet_hold_the_same_rows(
    pattern_model: Path,
    photos_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = tmp_path / "out.csv"
    assert predict(pattern_model, str(photos_dir / "a"), "--out", str(table)) == 0
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 and list(rows[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    monkeypatch.setattr(results_file, "PARQUET_ROWS", 3)
    folder = tmp_path / "out.parquet"
    assert predict(pattern_model, str(photos_dir / "a"), "--out", str(folder)) == 0
    parts = sorted(p.name for p in folder.iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    (folder / "part-00000.parquet").unlink()  # its 3 images are done again, in a new part
    assert predict(pattern_model, str(photos_dir / "a"), "--out", str(folder), "--resume") == 0
    assert sorted(p.name for p in folder.iterdir()) == [*parts[1:], "part-00003.parquet"]
    frame = pq.read_table(folder).to_pandas().sort_values("path")
    assert list(frame["path"]) == [row["path"] for row in rows]
    for name in ("score", *PATTERN_CLASSES):
        assert np.allclose(frame[name], [float(row[name]) for row in rows], atol=6e-5), name
    assert frame["x1"].isna().all() and frame["label"].tolist() == [r["label"] for r in rows]
    assert frame[["frame", "time_s", "track", "raw_label"]].isna().all(axis=None)  # photos

    faceless = tmp_path / "faceless.csv"  # 48x48 patterns: the detector finds no face
    argv = ["predict", str(photos_dir / "a" / "00.png"), "--model", str(pattern_model)]
    assert main([*argv, "--out", str(faceless)]) == 0
    with faceless.open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["face"] == "0" and row["label"] == "" and row["happy"] == ""
    capsys.readouterr()


def test_shards_split_the_sorted_inputs(
    pattern_model: Path, photos_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = sorted(str(p) for p in photos_dir.rglob("*.png"))
    seen: list[str] = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard{k}.jsonl"
        predict(pattern_model, str(photos_dir), "--out", str(out), "--shard", f"{k}/3")
        paths = [r["path"] for r in jsonl(out)]
        assert paths == [p for p in everything[k - 1 :: 3] if not p.endswith("broken.png")]
        seen += paths
    assert sorted(seen) == [p for p in everything if not p.endswith("broken.png")]
    assert parse_shard("3/3") == (2, 3)
    assert list(take_shard(range(10), (1, 4))) == [1, 5, 9]
    for bad in ("0/3", "4/3", "1-3", "x/y"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    assert predict(pattern_model, str(photos_dir), "--resume") == 2
    assert "--resume continues an --out FILE" in capsys.readouterr().err


class _LinearClassifier:
    """A real but tiny classifier for 8x8 gray crops: softmax of a fixed linear map."""

    runtime = label = "numpy"
    bundle = None

    def __init__(self) -> None:
        self.spec = ModelSpec("linear", PATTERN_CLASSES, Preprocessing(8, 1, (0.5,), (0.5,)))
        self.name, self.classes, self.prep = "linear", list(PATTERN_CLASSES), self.spec.prep
        self.default_tta, self.va = "none", False
        self.weights = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        logits = batch.reshape(len(batch), -1) @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True), None


_PEAK_RSS = """
import resource, sys
from test_bulk_predict import _LinearClassifier
from ferlab.cli import main
from ferlab.inference.recognizer import Recognizer
recognizer = Recognizer(_LinearClassifier(), detect=False, tta="none")
Recognizer.load = classmethod(lambda cls, **_: recognizer)
for listing, out in zip(sys.argv[1::2], sys.argv[2::2]):
    assert main(["predict", "--list", listing, "--out", out, "--batch-size", "256"]) == 0
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@pytest.mark.slow
def test_memory_stays_flat_over_100000_images(tmp_path: Path) -> None:
    """A list of 100,000 paths to 100 8x8 images, after a warm-up on 2,000 of them: the peak RSS
    of the process grows by less than holding the paths alone would take."""
    rng = np.random.default_rng(0)
    images = [tmp_path / f"{index:03d}.png" for index in range(100)]
    for index, path in enumerate(images):
        Image.fromarray(pattern_image(index % 3, rng, size=8)).save(path)
    for name, count in (("warm-up", 2_000), ("all", 100_000)):
        (tmp_path / f"{name}.txt").write_text("".join(f"{images[i % 100]}\n" for i in range(count)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    argv = [
        str(tmp_path / f"{name}{ext}") for name in ("warm-up", "all") for ext in (".txt", ".jsonl")
    ]
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    small, large = (float(line) for line in done.stdout.split())
    with (tmp_path / "all.jsonl").open() as handle:
        assert sum(1 for _ in handle) == 100_000
    assert large - small < 10, (small, large)  # 100,000 paths alone: ~20 MB; results: ~100 MB


def test_engine_ray_without_ray_says_how_to_get_it(
    pattern_model: Path,
    photos_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "out.jsonl"
    assert predict(pattern_model, str(photos_dir), "--out", str(out), "--engine", "ray") == 2
    err = capsys.readouterr().err
    assert err == "ferlab: error: --engine ray needs Ray: pip install 'ferlab[ray]'\n"
    assert not out.exists()
    assert predict(pattern_model, str(photos_dir), "--workers", "2") == 2
    assert "--ray-address and --workers are for --engine ray" in capsys.readouterr().err


def test_resume_refuses_other_files_and_models_and_changes_nothing(
    pattern_model: Path, photos_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(photos_dir / "a" / "00.png")
    others = {  # (content, the message)
        "notes.csv": ("name,score\nalice,1\nbob,2", "notes.csv: written with other columns"),
        "notes.jsonl": ('{"a": 1}\n{"b": 2', "notes.jsonl: line 1 is not a result record"),
        "model.jsonl": (
            json.dumps({"path": "x.png", "faces": [{"probs": {"cat": 1.0}}]}) + "\n",
            "model.jsonl: line 1 holds another model's classes (cat)",
        ),
    }
    for name, (text, message) in others.items():
        (tmp_path / name).write_text(text)
        assert predict(pattern_model, source, "--out", str(tmp_path / name), "--resume") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, name
        assert (tmp_path / name).read_text() == text, name  # the last line is not cut
    parts = tmp_path / "old.parquet"
    parts.mkdir()
    pq.write_table(pa.table({"path": ["x.png"], "cat": [1.0]}), parts / "part-00000.parquet")
    assert predict(pattern_model, source, "--out", str(parts), "--resume") == 2
    assert "part-00000.parquet: written with other columns" in capsys.readouterr().err
    assert sorted(path.name for path in parts.iterdir()) == ["part-00000.parquet"]

    fresh = tmp_path / "new" / "sub" / "results.csv"  # nothing read: nothing made
    assert predict(pattern_model, str(tmp_path / "none.png"), "--out", str(fresh)) == 2
    assert not (tmp_path / "new").exists()
    assert main(["predict", source, "--model", str(pattern_model), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err

    whole = tmp_path / "whole.csv"
    assert predict(pattern_model, source, "--out", str(whole)) == 0
    started = tmp_path / "started.csv"  # a partly written header is this model's: finished
    started.write_text(whole.read_text()[:10])
    assert predict(pattern_model, source, "--out", str(started), "--resume") == 0
    assert started.read_text() == whole.read_text()


def test_a_source_given_twice_or_inside_another_is_read_once(
    pattern_model: Path, photos_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    a, b = photos_dir / "a", photos_dir / "b"
    named = a / "00.png"
    sources = [str(a), str(photos_dir), str(named), f"{photos_dir}/../{photos_dir.name}"]
    with pytest.warns(UserWarning) as caught:
        assert predict(pattern_model, *sources, "--out", str(out)) == 1  # broken.png
    assert [str(w.message) for w in caught] == [
        f"{a}: inside {photos_dir}, which is given too, so its images are read once",
        f"{named}: inside {photos_dir}, which is given too, so its images are read once",
        f"{sources[3]}: given again (as {photos_dir}), so its images are read once",
    ]
    rows = jsonl(out)
    assert len(rows) == 13 and len({row["path"] for row in rows}) == 13
    assert {Path(row["path"]).parent for row in rows} == {a, b}
