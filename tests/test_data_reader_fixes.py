"""Data readers: one file under several spellings, bad vote rows, stray quotes, pixel tokens,
renames onto a class, and files that are not .npy arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_pattern_tree
from ferlab.cli import main
from ferlab.data.affectnet import AnnotationError, read_annotation
from ferlab.data.classes import ClassMapping
from ferlab.data.soft_labels import attach_votes, read_vote_table
from ferlab.data.sources import load_dataset
from ferlab.errors import DataError


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(path)
    return path


def load_quietly(path: Path, **kwargs: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(path, **kwargs)


def test_manifest_rows_that_spell_one_file_differently_are_second_rows(tmp_path: Path) -> None:
    images = tmp_path / "data"
    for name in "abcd":
        write_image(images / f"{name}.png")
    (tmp_path / "link.png").symlink_to(images / "a.png")
    manifest = images / "manifest.csv"
    manifest.write_text(
        "path,label,split\n"
        "a.png,happy,train\n"
        f"{images / 'a.png'},sad,train\n"  # line 3: absolute
        "../data/a.png,sad,test\n"  # line 4: out and back in
        "../link.png,sad,val\n"  # line 5: a symlink to it
        "b.png,sad,train\n"
        "c.png,happy,val\n"
        "d.png,sad,test\n"
    )
    source = load_quietly(manifest)
    assert [(where, reason) for where, reason in source.skipped] == [
        (f"{manifest}:line 3", f"second row for {images / 'a.png'} (first: line 2)"),
        (f"{manifest}:line 4", "second row for ../data/a.png (first: line 2)"),
        (f"{manifest}:line 5", "second row for ../link.png (first: line 2)"),
    ]
    assert source.splits["train"].labels == ["happy", "sad"]
    assert {name: len(table) for name, table in source.splits.items()} == {
        "train": 2,
        "val": 1,
        "test": 1,
    }


def _votes(tmp_path: Path) -> tuple[Path, Path]:
    """A pattern tree and a votes file with a bad row of each kind in lines 3 to 10."""
    root = make_pattern_tree(tmp_path / "data", {"train": 4, "val": 2})
    files = [p.relative_to(root).as_posix() for p in sorted(root.glob("*/*/*.png"))]
    rows = [f"{name},8,1,1" for name in files if name != "train/sad/001.png"]
    first = rows[0].split(",")[0]
    rows[1:1] = [
        "train/happy/001.png,-5,10,0",  # line 3
        "train/happy/002.png,nan,10,0",  # line 4
        "train/happy/003.png,inf,10,0",  # line 5
        "train/sad/000.png,1e300,10,0",  # line 6
        f"./{first},0,10,0",  # line 7: the first row's file again
        "../../outside.png,0,10,0",  # line 8
        "train/../../data/train/sad/001.png,0,10,0",  # line 9: comes back into the root
        f"train/x/../{first.partition('/')[2]},0,10,0",  # line 10: the first row's file again
    ]
    path = tmp_path / "votes.csv"
    path.write_text("\n".join(["file,happy,sad,surprise", *rows]) + "\n")
    return root, path


def test_bad_vote_rows_are_listed_by_line_and_counted(tmp_path: Path) -> None:
    root, votes = _votes(tmp_path)
    with pytest.warns(UserWarning, match=r"votes\.csv: left out 7 bad row\(s\): line 3: ") as seen:
        source, report = attach_votes(load_quietly(root), read_vote_table(votes))
    [message] = [str(w.message) for w in seen if "bad row" in str(w.message)]
    assert "line 3: a negative vote for train/happy/001.png" in message
    assert "line 4: a vote of 'nan' for train/happy/002.png" in message
    assert "line 5: a vote of 'inf' for train/happy/003.png" in message
    assert "line 6: votes sum outside float32's range" in message
    assert message.endswith(
        "line 7: second row for train/happy/000.png and 2 more (--on-bad-file error stops at "
        "the first)"
    )
    assert [where.rpartition(":line ")[2] for where, _ in report.bad_rows[5:]] == ["8", "10"]
    assert [reason for _, reason in report.bad_rows[5:]] == [
        f"../../outside.png is outside the data root {root}",
        "second row for train/x/../happy/000.png (first: line 2)",
    ]
    assert source.unmatched_rows == []
    train = source.splits["train"]
    sad = train.paths.index(root / "train" / "sad" / "001.png")
    np.testing.assert_array_equal(train.votes[sad], [0, 10, 0])


def test_on_bad_file_error_stops_at_the_first_bad_vote_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, votes = _votes(tmp_path)
    with pytest.raises(DataError, match=r"votes\.csv:line 3: a negative vote for train/happy/001"):
        attach_votes(load_quietly(root, on_bad_file="error"), read_vote_table(votes))
    runs = tmp_path / "runs"
    argv = ["train", "--data", root, "--labels", votes, "--on-bad-file", "error"]
    code = main([str(arg) for arg in [*argv, "--runs-dir", runs, "--epochs", "1"]])
    err = capsys.readouterr().err
    assert code == 2
    assert "votes.csv:line 3: a negative vote for train/happy/001.png" in err
    assert not runs.exists()


def _fer_row(code: int, pixels: str | None = None) -> str:
    return f"{code},{pixels or ' '.join(['7'] * 2304)},Training"


def test_an_unclosed_quote_spoils_its_own_row_only(tmp_path: Path) -> None:
    rows = [_fer_row(i % 2) for i in range(8)]
    rows[2] = f'3,"{" ".join(["7"] * 2304)},Training'  # line 4
    path = tmp_path / "fer.csv"
    path.write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
    source = load_quietly(path)
    assert source.skipped == [(f"{path}:line 4", "unclosed quote")]
    assert sum(len(table) for table in source.splits.values()) == 7


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("٣", "non-integer pixel value '٣'"),
        ("1_0", "non-integer pixel value '1_0'"),
        ("99999999999999999999", "pixel value 99999999999999999999 outside 0-255"),
        ("-99999999999999999999", "pixel value -99999999999999999999 outside 0-255"),
    ],
)
def test_pixel_values_are_ascii_digits_quoted_as_written(
    tmp_path: Path, token: str, reason: str
) -> None:
    rows = [_fer_row(i % 2) for i in range(4)]
    rows.append(_fer_row(0, " ".join([token] + ["7"] * 2303)))  # line 6
    path = tmp_path / "fer.csv"
    path.write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n", encoding="utf-8")
    assert load_quietly(path).skipped == [(f"{path}:line 6", reason)]


def test_renaming_onto_a_class_that_exists_warns_of_the_merge() -> None:
    with pytest.warns(UserWarning) as seen:
        mapping = ClassMapping.build(["angry", "happy", "sad"], rename={"angry": "happy"})
    assert [str(w.message) for w in seen] == [
        "--rename angry=happy: happy already exists, so angry is merged into it "
        "(use --merge to say so)"
    ]
    assert mapping.names == ["happy", "sad"]
    assert mapping.label_of("angry") == mapping.label_of("happy") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClassMapping.build(["anger", "happy", "sad"], rename={"anger": "angry"})


def test_a_file_that_is_no_npy_array_gets_no_advice_to_unpickle(tmp_path: Path) -> None:
    garbage = tmp_path / "s01_val.npy"
    garbage.write_bytes(b"<html>not an array</html>")
    with pytest.raises(AnnotationError) as error:
        read_annotation(garbage)
    assert str(error.value) == (
        "not a readable .npy array (not a NumPy .npy file: it starts with b'<html>no')"
    )
    pickled = tmp_path / "s02_val.npy"
    np.save(pickled, np.array([{"v": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AnnotationError) as error:
        read_annotation(pickled)
    assert "allow_pickle" not in str(error.value)
    assert "holds Python objects, which ferlab does not load" in str(error.value)
