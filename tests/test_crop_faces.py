"""`ferlab data crop-faces` on photos pasted into larger canvases, and train's photo warning."""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferlab.cli import main
from ferlab.errors import OutputError
from ferlab.inference.crop_faces import crop_faces, not_face_crops_warning
from ferlab.inference.detect import detect_faces

CANVAS = (640, 480)


def _canvas(photos: Path, *names: str) -> Image.Image:
    """A gray 640x480 canvas with each photo at 256 px, side by side."""
    canvas = Image.new("RGB", CANVAS, (120, 120, 120))
    for k, name in enumerate(names):
        photo = Image.open(photos / name).convert("RGB")
        photo.thumbnail((256, 256))
        canvas.paste(photo, (40 + 300 * k, 100))
    return canvas


@pytest.fixture(scope="module")
def tree(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/happy: astronaut (JPEG), both photos; train/sad: Grace Hopper; val/sad: no face;
    test/happy: astronaut."""
    root = tmp_path_factory.mktemp("photos")
    files = {
        "train/happy/astronaut.jpg": ("astronaut.png",),
        "train/happy/pair.png": ("astronaut.png", "grace_hopper.jpg"),
        "train/sad/grace.png": ("grace_hopper.jpg",),
        "val/sad/blank.png": (),
        "test/happy/astronaut.png": ("astronaut.png",),
    }
    for name, pasted in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _canvas(photos, *pasted).save(root / name)
    return root


def _report(folder: Path) -> dict[str, tuple[str, str]]:
    with (folder / "crop-faces.csv").open(newline="") as handle:
        return {row["file"]: (row["status"], row["faces"]) for row in csv.DictReader(handle)}


def test_crops_keep_the_layout_and_hold_a_face_that_fills_them(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "crops"
    summary = crop_faces(tree, out)
    assert (summary.images, summary.crops) == (5, 4)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*"))
    assert written == [
        "crop-faces.csv",
        "test/happy/astronaut.png",
        "train/happy/astronaut.jpg",
        "train/happy/pair.png",
        "train/sad/grace.png",
    ]
    assert _report(out) == {
        "train/happy/pair.png": ("several faces, largest kept", "2"),
        "val/sad/blank.png": ("no face", "0"),
    }
    for name in written[1:]:
        crop = np.asarray(Image.open(out / name).convert("RGB"))
        assert crop.shape[0] == crop.shape[1] > 40
        (face,) = detect_faces(crop)
        assert face.box[2] - face.box[0] > 0.6 * crop.shape[1]
    sides = [
        max(x2 - x1, y2 - y1)
        for x1, y1, x2, y2 in (
            face.box
            for face in detect_faces(
                np.asarray(Image.open(tree / "train/happy/pair.png").convert("RGB"))
            )
        )
    ]
    assert len(sides) == 2 and Image.open(out / "train/happy/pair.png").width == max(sides)
    assert not_face_crops_warning(out) is None
    assert "ferlab data crop-faces" in (not_face_crops_warning(tree) or "")
    assert not_face_crops_warning(tmp_path / "missing") is None  # train says what is wrong
    with pytest.raises(OutputError, match="not an empty folder"):
        crop_faces(tree, out)


def test_cli_manifest_with_every_face_or_none(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tree / "list.csv"
    manifest.write_text("path,label\ntrain/happy/pair.png,happy\nval/sad/blank.png,sad\n")
    out = tmp_path / "all"
    assert main(["data", "crop-faces", str(manifest), str(out), "--multi", "all"]) == 0
    assert "2 images, 2 face crops written; 1 no face, 1 several faces, all kept" in (
        capsys.readouterr().out
    )
    rows = (out / "list.csv").read_text().splitlines()
    assert rows == [
        "path,label",
        "train/happy/pair_face1.png,happy",
        "train/happy/pair_face2.png,happy",
    ]
    assert (
        main(["data", "crop-faces", str(manifest), str(tmp_path / "skip"), "--multi", "skip"]) == 0
    )
    assert (tmp_path / "skip" / "list.csv").read_text() == "path,label\n"
    assert _report(tmp_path / "skip")["train/happy/pair.png"] == ("several faces, skipped", "2")


class _Stop(Exception):
    pass


def test_train_on_photos_warns_once(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: object, **kwargs: object) -> None:
        raise _Stop

    monkeypatch.setattr("ferlab.training.run.train", stop)
    with pytest.warns(UserWarning) as caught, pytest.raises(_Stop):
        main(["train", "--data", str(tree), "--epochs", "1"])
    assert len(caught) == 1 and "ferlab data crop-faces" in str(caught[0].message)


def test_cli_reports_unreadable_files_in_its_exit_code(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(tree / "train" / "sad", mixed / "sad")
    odd = os.path.join(os.fsencode(mixed / "sad"), b"caf\xe9.png")
    shutil.copy(tree / "train" / "sad" / "grace.png", os.fsdecode(odd))
    (mixed / "sad" / "notes.png").write_text("not a photo")
    assert main(["data", "crop-faces", str(mixed), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "3 images, 2 face crops written; 1 unreadable" in captured.out
    assert captured.err == "ferlab: 1 of 3 images could not be read (listed in crop-faces.csv)\n"
    assert os.path.exists(os.path.join(os.fsencode(tmp_path / "out" / "sad"), b"caf\xe9.png"))

    broken = tmp_path / "broken"
    (broken / "sad").mkdir(parents=True)
    (broken / "sad" / "a.png").write_text("not a photo")
    assert main(["data", "crop-faces", str(broken), str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "none of its 1 images could be read" in err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--min-face", "0"], r"min_face \(--min-face\) must be a number of at least 1"),
        (["--min-face", "-5"], r"min_face \(--min-face\) must be a number of at least 1"),
    ],
)
def test_cli_refuses_bad_options_and_outputs_inside_the_photos(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["data", "crop-faces", str(tree), str(tmp_path / "out"), *argv]) == 2
    assert re.search(message, capsys.readouterr().err)
    inside = tree / "train" / "happy" / "crops"
    assert main(["data", "crop-faces", str(tree), str(inside)]) == 2
    assert "inside the data folder" in capsys.readouterr().err
    assert not inside.exists() and not (tmp_path / "out").exists()
