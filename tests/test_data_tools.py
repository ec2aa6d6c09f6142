"""`ferlab data inspect` (classes, bad files, planted duplicates) and `ferlab data convert`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_pattern_tree
from ferlab.cli import main
from ferlab.data import convert as convert_module
from ferlab.data.convert import convert_dataset
from ferlab.data.duplicates import close_hash_pairs, popcount
from ferlab.data.inspect import format_summary, inspect_dataset, write_inspection
from ferlab.errors import ConfigError, DataError

CLASSES = ("happy", "sad", "surprise")
PER_CLASS = {"train": 6, "val": 3, "test": 3}
FER_CODES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    """A 48x48 gray image of random low-frequency structure in 40..200 (no clipping nearby)."""
    coarse = Image.fromarray(rng.integers(40, 200, (6, 6)).astype(np.uint8))
    return np.asarray(coarse.resize((48, 48), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of distinct images plus planted duplicates, an unreadable and an empty file.

    Exact: train/happy/000 -> test/happy/copy (PNG re-encoded), train/sad/001 -> val/happy/moved
    (different label), train/happy/002 -> train/happy/again. Near: train/surprise/003 + 8 gray
    levels -> test/surprise/brighter, val/sad/000 as JPEG q95 -> test/sad/resaved.jpg.
    """
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(1)
    for split, count in PER_CLASS.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(smooth_image(rng)).save(folder / f"{i:03d}.png")

    def pixels(path: str) -> np.ndarray:
        return np.asarray(Image.open(root / path))

    Image.fromarray(pixels("train/happy/000.png")).save(
        root / "test/happy/copy.png", compress_level=1
    )
    Image.fromarray(pixels("train/sad/001.png")).save(
        root / "val/happy/moved.png", compress_level=9
    )
    Image.fromarray(pixels("train/happy/002.png")).save(
        root / "train/happy/again.png", optimize=True
    )
    brighter = pixels("train/surprise/003.png").astype(np.int16) + 8
    Image.fromarray(brighter.astype(np.uint8)).save(root / "test/surprise/brighter.png")
    Image.fromarray(pixels("val/sad/000.png")).save(root / "test/sad/resaved.jpg", quality=95)
    (root / "test/happy/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "val/sad/empty.png").write_bytes(b"")
    return root


def test_close_hash_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    flips = [
        value ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, k, replace=False)))
        for value, k in zip(base[:200], rng.integers(1, 7, 200), strict=True)
    ]
    values = np.unique(np.concatenate([base, np.array(flips, dtype=np.uint64)]))
    i, j = np.triu_indices(len(values), 1)
    distances = popcount(values[i] ^ values[j])
    for threshold in (0, 2, 4, 7):
        expected = {(a, b) for a, b, d in zip(i, j, distances, strict=True) if d <= threshold}
        found = {(int(a), int(b)) for a, b in close_hash_pairs(values, threshold)}
        assert found == expected
    assert len(expected) > 150  # the planted neighbours are there


def test_inspect_finds_planted_duplicates_and_bad_files(planted: Path) -> None:
    report = inspect_dataset(planted).report
    assert report["split_sizes"] == {"train": 19, "val": 10, "test": 13}
    assert report["class_counts"]["test"] == {"happy": 5, "sad": 4, "surprise": 4}
    assert report["class_counts"]["all"]["happy"] == 7 + 4 + 5
    assert report["images"]["sizes"] == {"48x48": 41}
    assert report["images"]["formats"] == {"png": 40, "jpeg": 1}
    unreadable = {entry["file"]: entry["reason"] for entry in report["unreadable"]}
    assert set(unreadable) == {"test/happy/broken.png", "val/sad/empty.png"}
    assert unreadable["val/sad/empty.png"] == "empty file"

    duplicates = report["duplicates"]
    assert duplicates["exact_groups"] == 3 and duplicates["exact_images"] == 6
    assert duplicates["near_pairs"] == 2
    pairs = duplicates["by_split_pair"]
    assert pairs["train-train"] == {
        "exact": 1, "exact_label_conflicts": 0, "near": 0, "near_label_conflicts": 0
    }  # fmt: skip
    assert pairs["train-val"] == {
        "exact": 1, "exact_label_conflicts": 1, "near": 0, "near_label_conflicts": 0
    }  # fmt: skip
    assert pairs["train-test"] == {
        "exact": 1, "exact_label_conflicts": 0, "near": 1, "near_label_conflicts": 0
    }  # fmt: skip
    assert pairs["val-test"]["near"] == 1 and pairs["val-test"]["exact"] == 0
    assert pairs["val-val"]["exact"] + pairs["test-test"]["near"] == 0
    near = {frozenset((p["a"]["id"], p["b"]["id"])) for p in duplicates["near_pair_list"]}
    assert near == {
        frozenset(("train/surprise/003.png", "test/surprise/brighter.png")),
        frozenset(("val/sad/000.png", "test/sad/resaved.jpg")),
    }
    assert duplicates["in_other_splits"]["test"] == {"exact": 1, "near": 2}

    imbalance = report["imbalance"]["train"]
    assert imbalance["majority_class"] == "happy"
    assert imbalance["max_min_ratio"] == pytest.approx(7 / 6, abs=0.01)
    assert 0.99 < imbalance["balance"] <= 1.0


def test_dedupe_drops_the_later_split_copy(
    planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "clean.csv"
    assert main(["data", "dedupe", str(planted), "--out", str(manifest)]) == 1  # one unreadable
    captured = capsys.readouterr()
    assert "kept 37 images, dropped 4 (val: 1 exact, 0 near; test: 1 exact, 2 near)" in (
        captured.out
    )
    assert captured.err == (
        f"ferlab: warning: {planted}: left out 2 unreadable file(s) (first: val/sad/empty.png: "
        "empty file); listed in clean-dropped.csv\n"
    )
    with (tmp_path / "clean-dropped.csv").open(newline="") as handle:
        dropped = {row["path"]: row for row in csv.DictReader(handle)}
    assert dropped.pop("val/sad/empty.png")["kind"] == "unreadable"
    assert dropped.pop("test/happy/broken.png")["kind"] == "unreadable"
    assert set(dropped) == {
        "val/happy/moved.png",
        "test/happy/copy.png",
        "test/surprise/brighter.png",
        "test/sad/resaved.jpg",
    }
    assert dropped["test/sad/resaved.jpg"]["duplicate_of"] == "val/sad/000.png"
    assert dropped["test/happy/copy.png"]["kind"] == "exact"
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = {Path(row["path"]).relative_to(planted).as_posix() for row in rows}
    assert "train/happy/again.png" in kept and "train/happy/000.png" in kept
    assert not kept & set(dropped)
    clean = inspect_dataset(manifest).report
    assert clean["split_sizes"] == {"train": 19, "val": 9, "test": 9}
    assert clean["unreadable"] == []
    assert all(
        entry == {"exact": 0, "near": 0}
        for entry in (clean["duplicates"]["in_other_splits"].values())
    )
    before = manifest.read_bytes()
    again = ["data", "dedupe", str(manifest), "--out"]
    (tmp_path / "taken.csv").write_text("mine")
    for out, message in [
        (manifest, "this is one of the inputs"),
        (tmp_path / "taken.csv", "already exists; give --exist-ok"),
        (tmp_path / "clean.txt", "--out must be a file name ending in .csv"),
        (tmp_path / "new.csv", None),
    ]:
        code = main([*again, str(out)])
        err = capsys.readouterr().err
        if message is None:
            assert code == 0 and err == ""
        else:
            assert code == 2 and message in err and len(err.splitlines()) == 1
    assert main([*again, str(manifest), "--exist-ok"]) == 2
    assert "this is one of the inputs" in capsys.readouterr().err
    assert manifest.read_bytes() == before
    assert (tmp_path / "taken.csv").read_text() == "mine"
    assert (tmp_path / "new.csv").read_bytes() == before


def test_dedupe_refuses_a_file_name_a_manifest_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_pattern_tree(tmp_path / "data", {"train": 3, "val": 2})
    odd = next((tree / "train" / "happy").iterdir())
    odd.rename(os.fsdecode(os.path.join(os.fsencode(odd.parent), b"caf\xe9.png")))
    assert main(["data", "dedupe", str(tree), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not UTF-8, which a CSV manifest cannot hold" in err
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m-dropped.csv").exists()


def test_inspect_writes_report_files(planted: Path, tmp_path: Path) -> None:
    inspection = inspect_dataset(planted, near_threshold=0)
    written = write_inspection(inspection, tmp_path / "out")
    names = {path.name for path in written}
    assert {"inspect.json", "inspect.md", "class_distribution.png", "samples-sad.png"} <= names
    assert all(path.stat().st_size > 0 for path in written)
    assert (
        json.loads((tmp_path / "out/inspect.json").read_text())["duplicates"]["exact_groups"] == 3
    )
    assert "| train-test | 1 | 0 |" in (tmp_path / "out/inspect.md").read_text()
    summary = format_summary(inspection.report)
    assert "train-test" in summary and "drawn from the data" not in summary
    with pytest.raises(ConfigError, match="near threshold"):
        inspect_dataset(planted, near_threshold=17)


def test_cli_inspect(planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(planted), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "unreadable: 2" in out
    assert "3 groups of identical pixels (6 images); 2 near pairs" in out
    assert (tmp_path / "report" / "samples-happy.png").is_file()
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    inside = planted / "train" / "happy" / "report"
    assert main(["data", "inspect", str(planted), "--out", str(inside)]) == 2
    assert "inside the data folder" in capsys.readouterr().err and not inside.exists()
    fewer = tmp_path / "fewer"
    shutil.copytree(planted, fewer)
    for split in ("train", "val", "test"):
        shutil.rmtree(fewer / split / "happy")
    report = ["data", "inspect", str(fewer), "--out", str(tmp_path / "report"), "--exist-ok"]
    assert main(report) == 0
    assert not (tmp_path / "report" / "samples-happy.png").exists()
    assert (tmp_path / "report" / "samples-sad.png").is_file()


def write_fer_csv(path: Path, seed: int = 0) -> list[list[str]]:
    """A FER2013 CSV: every class in every split, rows grouped by Usage as in the original."""
    rng = np.random.default_rng(seed)
    rows = []
    for usage, per_class in (("Training", 3), ("PublicTest", 1), ("PrivateTest", 2)):
        for k in range(per_class * len(FER_CODES)):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            rows.append([str((k * 5) % len(FER_CODES)), pixels, usage])
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(rows)
    return rows


def read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as file:
        return list(csv.reader(file))


def test_inspect_fer2013_csv_rows(tmp_path: Path) -> None:
    rows = write_fer_csv(tmp_path / "fer.csv")
    with (tmp_path / "fer.csv").open("a", newline="") as file:  # row 0 again, as PrivateTest
        csv.writer(file, lineterminator="\n").writerow([rows[0][0], rows[0][1], "PrivateTest"])
    report = inspect_dataset(tmp_path / "fer.csv").report
    assert report["kind"] == "fer2013_csv"
    assert report["images"] == {
        "decoded": 43, "sizes": {"48x48": 43}, "modes": {"L": 43}, "formats": {"csv": 43}
    }  # fmt: skip
    assert report["duplicates"]["by_split_pair"]["train-test"]["exact"] == 1
    assert report["duplicates"]["near_pairs"] == 0
    group = report["duplicates"]["exact_group_list"][0]
    assert [(entry["id"], entry["label"]) for entry in group] == [
        ("train#0", FER_CODES[int(rows[0][0])]),
        ("test#14", FER_CODES[int(rows[0][0])]),
    ]


def test_convert_round_trip(tmp_path: Path) -> None:
    rows = write_fer_csv(tmp_path / "fer.csv")
    folders = convert_dataset(tmp_path / "fer.csv", tmp_path / "tree")
    assert folders.direction == "csv->folders"
    assert folders.counts == {"train": 21, "val": 7, "test": 14}
    first = tmp_path / "tree" / "train" / FER_CODES[int(rows[0][0])] / "Training_00000.png"
    assert np.array_equal(np.asarray(Image.open(first)).ravel(), np.array(rows[0][1].split(), int))

    back = convert_dataset(tmp_path / "tree", tmp_path / "back.csv")
    assert back.direction == "folders->csv" and not back.skipped
    assert read_csv_rows(tmp_path / "back.csv") == [["emotion", "pixels", "Usage"], *rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.csv", "fer.csv", "tree"]


def test_convert_refuses_overwrite_and_unknown_classes(tmp_path: Path) -> None:
    write_fer_csv(tmp_path / "fer.csv")
    (tmp_path / "tree").mkdir()
    with pytest.raises(DataError, match="already exists"):
        convert_dataset(tmp_path / "fer.csv", tmp_path / "tree")
    assert convert_dataset(tmp_path / "fer.csv", tmp_path / "tree", force=True).counts["val"] == 7

    odd = tmp_path / "odd"
    for name in ("anger", "contempt", "Happy", "pride"):
        (odd / "train" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((60, 50, 3), np.uint8)).save(odd / "train" / name / "a.png")
        Image.fromarray(np.ones((60, 50, 3), np.uint8)).save(odd / "train" / name / "b.png")
    with pytest.raises(DataError, match=r"classes not in FER2013 .*: contempt, pride$"):
        convert_dataset(odd, tmp_path / "odd.csv")
    for name in ("contempt", "pride"):
        for file in (odd / "train" / name).iterdir():
            file.unlink()
        (odd / "train" / name).rmdir()
    result = convert_dataset(odd, tmp_path / "odd.csv")
    assert result.val_from_train and sum(result.counts.values()) == 4
    emotions = sorted(row[0] for row in read_csv_rows(tmp_path / "odd.csv")[1:])
    assert emotions == ["0", "0", "3", "3"]  # anger -> angry, Happy -> happy, resized to 48x48
    assert all(len(row[1].split()) == 48 * 48 for row in read_csv_rows(tmp_path / "odd.csv")[1:])


def test_convert_interrupted_leaves_nothing(
    tmp_path: Path, planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = convert_module._gray48

    def failing(path: Path) -> np.ndarray:
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(path)

    tree = tmp_path / "tree"
    for split in ("train", "val"):
        for name in CLASSES:
            (tree / split / name).mkdir(parents=True)
            for file in sorted((planted / split / name).glob("00*.png")):
                (tree / split / name / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(convert_module, "_gray48", failing)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset(tree, tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fer_csv(tmp_path / "fer.csv")
    assert main(["data", "convert", str(tmp_path / "fer.csv"), str(tmp_path / "tree")]) == 0
    assert "train 21, val 7, test 14" in capsys.readouterr().out
    assert main(["data", "convert", str(tmp_path / "fer.csv"), str(tmp_path / "tree")]) == 2
    assert "already exists (give --exist-ok" in capsys.readouterr().err
    assert main(["data", "convert", str(tmp_path / "tree"), str(tmp_path / "x")]) == 2
    assert "needs a .csv destination" in capsys.readouterr().err
    (tmp_path / "tree" / "train" / "happy" / "notes.png").write_text("not an image")
    assert main(["data", "convert", str(tmp_path / "tree"), str(tmp_path / "back.csv")]) == 1
    captured = capsys.readouterr()
    assert "train 21, val 7, test 14" in captured.out
    assert captured.err.splitlines()[0] == "ferlab: skipped 1 unreadable input(s):"
    assert "notes.png" in captured.err.splitlines()[1]


@pytest.mark.slow
def test_inspect_real_fer2013(
    fer2013_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.perf_counter()
    assert main(["data", "inspect", str(fer2013_dir), "--out", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{printed}\n(inspect took {elapsed:.1f} s)")
    report = json.loads((tmp_path / "inspect.json").read_text())
    assert report["split_sizes"] == {"train": 28709, "val": 3589, "test": 3589}
    assert report["images"]["sizes"] == {"48x48": 35887} and not report["unreadable"]
    assert report["imbalance"]["train"]["majority_class"] == "happy"
    assert report["imbalance"]["train"]["minority_class"] == "disgust"
    pairs = report["duplicates"]["by_split_pair"]
    assert set(pairs) == {
        "train-train",
        "train-val",
        "train-test",
        "val-val",
        "val-test",
        "test-test",
    }
    # FER2013 repeats images across its splits; measured 383 exact train-test pairs (2026-11-25)
    assert pairs["train-test"]["exact"] > 0 and pairs["train-val"]["exact"] > 0
    assert report["duplicates"]["in_other_splits"]["test"]["exact"] > 0
    assert "train-test" in printed


def test_inspect_says_which_splits_it_drew(tmp_path: Path) -> None:
    flat = make_pattern_tree(tmp_path / "flat", {"train": 10})
    for name in os.listdir(flat / "train"):
        (flat / "train" / name).rename(flat / name)
    (flat / "train").rmdir()
    report = inspect_dataset(flat).report
    assert report["drawn_splits"] == {"splits": ["train", "val", "test"], "seed": 0}
    assert format_summary(report).splitlines()[1] == (
        "splits train, val, test: drawn from the data (seed 0, default fractions); training "
        "draws them by its --seed and fractions"
    )
