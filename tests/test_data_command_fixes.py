"""`ferlab data convert`/`dedupe` refusals, notes and manifests; evaluation on one class and on
other spellings of the model's class names."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_pattern_tree, pattern_image
from ferlab.cli import main
from ferlab.data.sources import load_dataset


def write_fer_csv(path: Path, rows: int = 12) -> Path:
    """A FER2013 CSV of ``rows`` random 48x48 images, cycling through happy, sad and neutral."""
    rng = np.random.default_rng(0)
    usages = ("Training", "PublicTest", "PrivateTest")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for row in range(rows):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            writer.writerow([(3, 4, 6)[row % 3], pixels, usages[row // 3 % 3]])
    return path


def make_flat_tree(root: Path, classes: tuple[str, ...], per_class: int = 10) -> Path:
    """root/<class>/NNN.png: class folders with no split folders."""
    rng = np.random.default_rng(1)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = pattern_image(label % 3, rng)
            Image.fromarray(image).save(root / name / f"{i:03d}.png")
    return root


def test_convert_refuses_a_csv_destination_for_a_fer2013_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_fer_csv(tmp_path / "good.csv")
    assert main(["data", "convert", str(source), str(tmp_path / "out1.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "source is already a FER2013 CSV; the destination must be a folder" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["good.csv"]


def test_convert_note_names_the_splits_it_drew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = make_flat_tree(tmp_path / "flat", ("happy", "sad"))
    assert main(["data", "convert", str(flat), str(tmp_path / "flat.csv")]) == 0
    out = capsys.readouterr().out
    assert "note: no splits in the source; val and test were drawn from it at random" in out
    usages = {row["Usage"] for row in csv.DictReader((tmp_path / "flat.csv").open())}
    assert usages == {"Training", "PublicTest", "PrivateTest"}

    trained = make_pattern_tree(tmp_path / "trained", {"train": 10})
    assert main(["data", "convert", str(trained), str(tmp_path / "trained.csv")]) == 0
    out = capsys.readouterr().out
    assert "note: no val split in the source; val was split off train at random" in out
    assert "test" not in out.split("note:")[1]

    fixed = make_pattern_tree(tmp_path / "fixed", {"train": 4, "val": 2})
    assert main(["data", "convert", str(fixed), str(tmp_path / "fixed.csv")]) == 0
    assert "note:" not in capsys.readouterr().out


def test_convert_refuses_a_destination_inside_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_pattern_tree(tmp_path / "base", {"train": 3, "val": 2})
    inside = tree / "train" / "out.csv"
    assert main(["data", "convert", str(tree), str(inside)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"inside the data folder {tree}" in err
    assert not inside.exists()
    assert not list((tree / "train").glob(".*"))


def test_dedupe_lists_reasons_and_writes_a_manifest_that_moves_with_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    tree = make_pattern_tree(project / "data", {"train": 3, "val": 2})
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tree / "train" / "stray.png")
    (tree / "val" / "sad" / "empty.png").write_bytes(b"")
    manifest = project / "clean.csv"
    assert main(["data", "dedupe", str(tree), "--out", str(manifest)]) == 1
    capsys.readouterr()
    with (project / "clean-dropped.csv").open(newline="") as handle:
        reasons = {row["path"]: (row["kind"], row["reason"]) for row in csv.DictReader(handle)}
    assert reasons["train/stray.png"] == ("unreadable", "image outside a class folder")
    assert reasons["val/sad/empty.png"] == ("unreadable", "empty file")
    with manifest.open(newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    assert len(paths) == 15 and all(path.startswith("data/") for path in paths)

    def images(source_manifest: Path, root: Path) -> list[tuple[str, str, str]]:
        source = load_dataset(source_manifest)
        return sorted(
            (path.relative_to(root).as_posix(), label, split)
            for split, table in source.splits.items()
            for path, label in zip(table.paths or [], table.labels, strict=True)
        )

    before = images(manifest, project)
    moved = shutil.move(project, tmp_path / "moved")
    assert images(Path(moved) / "clean.csv", Path(moved)) == before
    assert len(before) == 15


def test_dedupe_keeps_absolute_paths_outside_the_manifest_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_pattern_tree(tmp_path / "data", {"train": 3, "val": 2})
    (tmp_path / "out").mkdir()
    manifest = tmp_path / "out" / "clean.csv"
    assert main(["data", "dedupe", str(tree), "--out", str(manifest)]) == 0
    capsys.readouterr()
    with manifest.open(newline="") as handle:
        paths = [Path(row["path"]) for row in csv.DictReader(handle)]
    assert paths and all(path.is_absolute() and path.is_file() for path in paths)


def test_cli_evaluate_on_one_class(
    pattern_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = make_flat_tree(tmp_path / "single", ("happy",), per_class=6)
    out = tmp_path / "eval"
    args = ["evaluate", str(pattern_model), "--data", str(single), "--split", "all"]
    assert main([*args, "--out", str(out)]) == 0
    assert "happy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["happy", "sad", "surprise"]
    assert metrics["samples"] == 6 and metrics["per_class"]["happy"]["support"] == 6
    assert "no temperature fitted" in metrics["calibration_note"]
    assert (out / "report.html").is_file() and (out / "plots" / "confusion_matrix.png").is_file()
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {row["true"] for row in rows} == {"happy"}

    drawn = tmp_path / "drawn"
    assert main(["evaluate", str(pattern_model), "--data", str(single), "--out", str(drawn)]) == 0
    drawn_metrics = json.loads((drawn / "metrics.json").read_text())
    assert drawn_metrics["samples"] == 1
    note = drawn_metrics["calibration_note"]
    assert note == "no temperature fitted: the val split holds one class"


def test_cli_evaluate_maps_other_spellings_of_the_model_classes(
    pattern_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twoc = make_flat_tree(tmp_path / "twoc", ("Happy", "sadness"))
    out = tmp_path / "eval"
    args = ["evaluate", str(pattern_model), "--data", str(twoc), "--split", "all"]
    note = f"{twoc}: class names read as the model's: Happy -> happy, sadness -> sad"
    with pytest.warns(UserWarning, match=f"^{re.escape(note)}$"):
        assert main([*args, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["happy", "sad"] and metrics["samples"] == 20

    odd = make_flat_tree(tmp_path / "odd", ("Happy", "pride"))
    odd_args = ["evaluate", str(pattern_model), "--data", str(odd), "--split", "all"]
    assert main([*odd_args, "--out", str(tmp_path / "odd-eval")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(
        f"ferlab: error: the data has classes the model does not know (pride) in {odd};"
    )
