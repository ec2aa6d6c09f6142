"""Tests for ferlab.data.classes and ferlab.data.sources on tiny data sets made in tmp_path."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fer2013_path
from ferlab.data import (
    CANONICAL_CLASSES,
    ClassMapping,
    SplitTable,
    canonical_order,
    load_dataset,
    parse_class_options,
    stratified_split,
)
from ferlab.errors import ConfigError, DataError

FER2013_DIR = fer2013_path() or Path("../shared/data/fer2013")


def write_image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)
    return path


def make_classes(folder: Path, counts: dict[str, int]) -> None:
    """folder/<class>/NNN.png, `counts[class]` images each."""
    for name, n in counts.items():
        for i in range(n):
            write_image(folder / name / f"{i:03d}.png", value=i)


def load_quietly(path: Path | str, **kwargs) -> object:
    """load_dataset, failing the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_dataset(path, **kwargs)


def fer_row(code: int, usage: str | None, pixels: list[int] | str | None = None) -> str:
    if pixels is None:
        pixels = [(code * 10 + i) % 256 for i in range(2304)]
    text = pixels if isinstance(pixels, str) else " ".join(map(str, pixels))
    return f"{code},{text}" + (f",{usage}" if usage else "")


# --- class folders -------------------------------------------------------------------------


def test_folders_with_train_val_test(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"happy": 4, "angry": 3})
    make_classes(tmp_path / "val", {"happy": 2, "angry": 1})
    make_classes(tmp_path / "test", {"happy": 1, "angry": 2})
    (tmp_path / "train" / "angry" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".DS_Store").write_bytes(b"\0")  # hidden: not even counted

    with pytest.warns(UserWarning) as caught:
        source = load_dataset(tmp_path)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: left out 1 file(s) that are not images by name (.txt 1; read: .bmp, .gif, "
        ".jfif, .jpe, .jpeg, .jpg, .pbm, .pgm, .png, .pnm, .ppm, .tif, .tiff, .webp)"
    ]

    assert source.kind == "folders"
    assert source.root == tmp_path
    assert source.classes == ["angry", "happy"]
    assert list(source.splits) == ["train", "val", "test"]
    assert source.skipped == []
    train = source.splits["train"]
    assert len(train) == 7
    assert train.class_counts() == {"angry": 3, "happy": 4}
    assert source.splits["val"].class_counts() == {"angry": 1, "happy": 2}
    assert source.splits["test"].class_counts() == {"angry": 2, "happy": 1}
    assert train.paths == sorted(train.paths)
    assert [p.parent.name for p in train.paths] == train.labels
    assert all(p.suffix == ".png" for p in train.paths)
    assert train.pixels is None and train.valence is None and train.arousal is None
    assert source.splits["val"].origin == str(tmp_path / "val")


def test_validation_folder_name_is_accepted(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"happy": 2, "sad": 2})
    make_classes(tmp_path / "validation", {"happy": 1, "sad": 1})
    source = load_quietly(tmp_path)
    assert list(source.splits) == ["train", "val"]
    assert source.splits["val"].origin == str(tmp_path / "validation")
    assert len(source.splits["train"]) == 4


def test_train_only_gets_stratified_val_split(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"angry": 10, "happy": 20, "sad": 2})
    make_classes(tmp_path / "test", {"angry": 1, "happy": 1, "sad": 1})

    source = load_quietly(tmp_path, val_fraction=0.2, seed=3)

    train, val = source.splits["train"], source.splits["val"]
    assert val.class_counts() == {"angry": 2, "happy": 4, "sad": 1}
    assert train.class_counts() == {"angry": 8, "happy": 16, "sad": 1}
    assert len(source.splits["test"]) == 3
    assert val.name == "val" and train.name == "train"
    assert set(train.paths).isdisjoint(val.paths)
    all_train = {p for p in (tmp_path / "train").rglob("*.png")}
    assert set(train.paths) | set(val.paths) == all_train
    assert [p.parent.name for p in val.paths] == val.labels

    again = load_quietly(tmp_path, val_fraction=0.2, seed=3)
    assert again.splits["val"].paths == val.paths
    other = load_quietly(tmp_path, val_fraction=0.2, seed=4)
    assert other.splits["val"].paths != val.paths


def test_flat_class_folders_split_three_ways(tmp_path: Path) -> None:
    counts = {"anger": 10, "sadness": 10, "neutral": 10, "surprise": 10, "contempt": 3}
    make_classes(tmp_path, counts)

    source = load_quietly(tmp_path, val_fraction=0.1, test_fraction=0.1)

    assert source.kind == "folders"
    assert source.classes == ["neutral", "anger", "contempt", "sadness", "surprise"]
    splits = source.splits
    assert list(splits) == ["train", "val", "test"]
    assert splits["test"].class_counts() == dict.fromkeys(source.classes, 1)
    assert splits["val"].class_counts() == dict.fromkeys(source.classes, 1)
    assert splits["train"].class_counts() == {
        "neutral": 8,
        "anger": 8,
        "contempt": 1,
        "sadness": 8,
        "surprise": 8,
    }
    path_sets = [set(table.paths) for table in splits.values()]
    assert sum(len(s) for s in path_sets) == 43
    assert set.union(*path_sets) == set(tmp_path.rglob("*.png"))
    assert splits["test"].origin == str(tmp_path)


def test_empty_and_stray_files(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"happy": 2, "sad": 2})
    make_classes(tmp_path / "val", {"happy": 1, "sad": 1})
    empty = tmp_path / "train" / "sad" / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "train" / "sad" / "corrupt.JPG"
    corrupt.write_bytes(b"not really a jpeg")
    stray = write_image(tmp_path / "train" / "stray.png")
    (tmp_path / "train" / "happy" / "labels.csv").write_text("x\n")

    with pytest.warns(
        UserWarning, match=r"left out 1 file\(s\) that are not images by name \(\.csv"
    ):
        source = load_dataset(tmp_path)

    assert source.skipped == [
        (str(empty), "empty file"),
        (str(stray), "image outside a class folder"),
    ]
    train = source.splits["train"]
    assert corrupt in train.paths  # not decoded here
    assert empty not in train.paths
    assert train.class_counts() == {"happy": 2, "sad": 3}

    with pytest.raises(DataError, match=r"empty\.png: empty file"):
        load_dataset(tmp_path, on_bad_file="error")


def test_what_a_tree_holds_beside_its_images_is_named(tmp_path: Path) -> None:
    """Netpbm and JFIF files are images; other files, class folders without images and folders
    beside the splits are named in one warning, never dropped without a word."""
    make_classes(tmp_path / "train", {"happy": 2, "sad": 2})
    make_classes(tmp_path / "val", {"happy": 1, "sad": 1})
    make_classes(tmp_path / "holdout", {"happy": 1})
    write_image(tmp_path / "train" / "sad" / "face.pgm")
    write_image(tmp_path / "train" / "happy" / "face.jfif")
    (tmp_path / "train" / "fear").mkdir()
    for name in ("a.raw", "b.raw", "c.heic"):
        (tmp_path / "train" / "happy" / name).write_bytes(b"\0")
    (tmp_path / "train" / "sad" / "moved.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.warns(UserWarning) as caught:
        source = load_dataset(tmp_path)
    assert source.splits["train"].class_counts() == {"happy": 3, "sad": 3}
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(
        f"{tmp_path}: left out 3 file(s) that are not images by name (.raw 2,"
    )
    assert f"1 image name(s) that are no file (first: {tmp_path}/train/sad/moved.png)" in message
    assert "class folder(s) without images: train/fear/" in message
    assert "folder(s) beside the splits: holdout/ (splits are" in message


def test_class_names_that_look_like_one_class_are_named(tmp_path: Path) -> None:
    make_classes(tmp_path, {"Happy": 3, "happiness": 3, "happy": 3, "sad": 3, "Sadness": 3})
    with pytest.warns(UserWarning) as caught:
        source = load_dataset(tmp_path)
    assert source.classes == ["Happy", "Sadness", "happiness", "happy", "sad"]  # as written
    (message,) = [str(w.message) for w in caught if "look like one" in str(w.message)]
    assert message == (
        f"{tmp_path}: classes that look like one: Happy, happiness, happy; Sadness, sad; they "
        "are learned apart unless merged (--merge 'happy=Happy+happiness+happy;sad=Sadness+sad')"
    )


def test_images_in_subfolders_of_a_class_folder_belong_to_it(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"happy": 2, "sad": 2})
    make_classes(tmp_path / "val", {"happy": 1, "sad": 1})
    deep = write_image(tmp_path / "train" / "sad" / "session 2" / "take" / "a.png")
    hidden = write_image(tmp_path / "train" / "sad" / ".thumbs" / "b.png")
    (tmp_path / "train" / "sad" / "loop").symlink_to(tmp_path / "train" / "sad")
    source = load_quietly(tmp_path)
    train = source.splits["train"]
    assert train.class_counts() == {"happy": 2, "sad": 3}
    assert deep in train.paths and hidden not in train.paths


def test_split_lacking_a_class_warns(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"happy": 2, "sad": 2, "fear": 2})
    make_classes(tmp_path / "val", {"happy": 1})
    with pytest.warns(UserWarning, match=r"split 'val' has no samples of fear, sad"):
        source = load_dataset(tmp_path)
    assert source.classes == ["fear", "happy", "sad"]


def test_split_without_samples_is_an_error(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"happy": 2, "sad": 2})
    (tmp_path / "test" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match=r"test: no samples in split 'test'"):
        load_dataset(tmp_path)


# --- FER2013 CSV ---------------------------------------------------------------------------


def write_fer_csv(path: Path, rows: list[str], usage: bool = True) -> Path:
    header = "emotion,pixels,Usage" if usage else "emotion,pixels"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_fer2013_csv_with_bad_rows(tmp_path: Path) -> None:
    csv_path = write_fer_csv(
        tmp_path / "fer.csv",
        [
            fer_row(0, "Training"),  # line 2
            fer_row(3, "Training"),
            fer_row(3, "Training"),
            fer_row(3, "Training", list(range(2303))),  # line 5
            fer_row(0, "PublicTest", "1 2 x" + " 3" * 2301),  # line 6
            fer_row(0, "PublicTest"),
            fer_row(3, "PublicTest"),
            fer_row(3, "PrivateTest", [300] * 2304),  # line 9
            fer_row(0, "PrivateTest"),
            fer_row(3, "PrivateTest"),
            fer_row(9, "PrivateTest"),  # line 12
            "",
        ],
    )

    source = load_quietly(csv_path)

    assert source.kind == "fer2013_csv"
    assert source.classes == ["angry", "happy"]
    assert {name: len(t) for name, t in source.splits.items()} == {"train": 3, "val": 2, "test": 2}
    assert source.skipped == [
        (f"{csv_path}:line 5", "2303 pixel values, expected 2304"),
        (f"{csv_path}:line 6", "non-integer pixel value 'x'"),
        (f"{csv_path}:line 9", "pixel value 300 outside 0-255"),
        (f"{csv_path}:line 12", "emotion code '9' not in 0-6"),
    ]
    train = source.splits["train"]
    assert train.labels == ["angry", "happy", "happy"]
    assert train.paths is None
    assert train.pixels is not None
    assert train.pixels.dtype == np.uint8 and train.pixels.shape == (3, 48, 48)
    assert train.pixels[1, 0, :3].tolist() == [30, 31, 32]
    assert train.pixels[1, 1, 0] == (30 + 48) % 256
    assert train.origin == str(csv_path)

    with pytest.raises(DataError, match=r"fer\.csv:line 5: 2303 pixel values, expected 2304"):
        load_dataset(csv_path, on_bad_file="error")


def test_fer2013_csv_without_usage_is_split(tmp_path: Path) -> None:
    rows = [fer_row(code, None) for code in (0, 6) for _ in range(10)]
    source = load_quietly(write_fer_csv(tmp_path / "fer.csv", rows, usage=False))
    sizes = {name: table.class_counts() for name, table in source.splits.items()}
    assert sizes == {
        "train": {"angry": 8, "neutral": 8},
        "val": {"angry": 1, "neutral": 1},
        "test": {"angry": 1, "neutral": 1},
    }
    assert source.splits["val"].pixels.shape == (2, 48, 48)


# --- manifest ------------------------------------------------------------------------------


def test_manifest_with_splits_valence_and_missing_file(tmp_path: Path) -> None:
    for name in "abcdef":
        write_image(tmp_path / "imgs" / f"{name}.png")
    absolute = write_image(tmp_path / "elsewhere" / "g.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,valence,arousal,split\n"
        "imgs/a.png,happy,0.5,0.25,train\n"
        "imgs/b.png,sad,,,train\n"
        f"{absolute},sad,-0.5,,train\n"
        "imgs/missing.png,happy,0.1,0.1,train\n"
        "imgs/c.png,happy,0.2,0.3,val\n"
        "imgs/d.png,sad,abc,0.3,val\n"
        "imgs/e.png,sad,0.0,0.0,validation\n"
        "imgs/f.png,happy,,0.9,test\n"
        "imgs/a.png,happy,5,-7,train\n"
        "./imgs/b.png,happy,0.1,0.1,train\n"
    )

    with pytest.warns(UserWarning, match=r"manifest\.csv: split 'test' has no samples of sad"):
        source = load_dataset(manifest)

    assert source.kind == "manifest"
    assert source.classes == ["happy", "sad"]
    assert source.skipped == [
        (str(tmp_path / "imgs" / "missing.png"), "file not found"),
        (f"{manifest}:line 7", "valence/arousal is not a number: abc, 0.3"),
        (
            f"{manifest}:line 10",
            "valence 5, arousal -7 outside [-1, 1] (rescale a rating scale to it)",
        ),
        (f"{manifest}:line 11", "second row for ./imgs/b.png (first: line 3)"),
    ]
    train = source.splits["train"]
    assert train.paths == [tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b.png", absolute]
    assert train.labels == ["happy", "sad", "sad"]
    np.testing.assert_array_equal(train.valence, np.array([0.5, np.nan, -0.5], np.float32))
    np.testing.assert_array_equal(train.arousal, np.array([0.25, np.nan, np.nan], np.float32))
    assert train.valence.dtype == np.float32
    assert source.splits["val"].labels == ["happy", "sad"]
    assert source.splits["test"].paths == [tmp_path / "imgs" / "f.png"]
    assert math.isnan(source.splits["test"].valence[0])
    assert source.splits["test"].origin == str(manifest)

    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        load_dataset(manifest, on_bad_file="error")


def test_manifest_without_split_column_is_stratified(tmp_path: Path) -> None:
    lines = ["path,label"]
    for label in ("happy", "sad"):
        for i in range(10):
            write_image(tmp_path / f"{label}{i}.png")
            lines.append(f"{label}{i}.png,{label}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")

    source = load_quietly(manifest)

    assert {name: len(t) for name, t in source.splits.items()} == {
        "train": 16,
        "val": 2,
        "test": 2,
    }
    assert source.splits["train"].valence is None
    for table in source.splits.values():
        assert [re.sub(r"\d+\.png$", "", p.name) for p in table.paths] == table.labels


# --- bad input -----------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="no such file or folder") as info:
        load_dataset(missing)
    assert str(missing) in str(info.value)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder is empty") as info:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no images found") as info:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_split_folders_without_train(tmp_path: Path) -> None:
    make_classes(tmp_path / "test", {"happy": 1})
    with pytest.raises(DataError, match=r"has test/ but no train/ folder"):
        load_dataset(tmp_path)


def test_bad_csv_header(tmp_path: Path) -> None:
    bad = tmp_path / "data.csv"
    bad.write_text("file,emotion\na.png,happy\n")
    with pytest.raises(DataError) as info:
        load_dataset(bad)
    message = str(info.value)
    assert str(bad) in message and "'file,emotion'" in message
    assert "emotion,pixels[,Usage]" in message and "path,label" in message
    assert "\n" not in message


def test_other_bad_arguments(tmp_path: Path) -> None:
    text = tmp_path / "data.txt"
    text.write_text("x")
    with pytest.raises(DataError, match=r"not a folder or a \.csv file"):
        load_dataset(text)
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("")
    with pytest.raises(DataError, match="empty CSV file"):
        load_dataset(empty_csv)
    make_classes(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="on_bad_file"):
        load_dataset(tmp_path / "d", on_bad_file="ignore")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset(tmp_path / "d", val_fraction=0.6, test_fraction=0.5)


# --- splitting and tables ------------------------------------------------------------------


def test_stratified_split() -> None:
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    keep, part = stratified_split(labels, 0.2, seed=1)
    assert sorted([*keep, *part]) == list(range(16))
    assert [labels[i] for i in part].count("a") == 2
    assert [labels[i] for i in part].count("b") == 1
    assert 15 in keep  # a single sample stays on the keep side
    assert list(keep) == sorted(keep) and list(part) == sorted(part)
    again_keep, again_part = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(keep, again_keep) and np.array_equal(part, again_part)
    assert len(stratified_split(labels, 0.0, seed=1)[1]) == 0
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0, seed=1)


def test_split_table_subset_and_counts() -> None:
    table = SplitTable(
        name="train",
        labels=["sad", "happy", "sad", "angry"],
        paths=None,
        pixels=np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2),
        valence=np.array([0.1, 0.2, np.nan, 0.4], np.float32),
        arousal=None,
        origin="x.csv",
    )
    assert table.class_counts() == {"angry": 1, "happy": 1, "sad": 2}
    sub = table.subset([3, 0])
    assert sub.labels == ["angry", "sad"] and sub.name == "train" and sub.origin == "x.csv"
    assert sub.pixels.tolist() == [table.pixels[3].tolist(), table.pixels[0].tolist()]
    np.testing.assert_array_equal(sub.valence, np.array([0.4, 0.1], np.float32))
    assert sub.arousal is None and len(sub) == 2
    assert len(table.subset([])) == 0


# --- classes -------------------------------------------------------------------------------


def test_canonical_order() -> None:
    assert canonical_order(["neutral", "happy", "angry", "happy"]) == ["angry", "happy", "neutral"]
    assert canonical_order(["contempt", "anger", "neutral"]) == ["neutral", "anger", "contempt"]
    assert canonical_order(["sadness", "neutral", "anger"]) == ["neutral", "anger", "sadness"]
    assert canonical_order(["zeta", "alpha", "happy"]) == ["alpha", "happy", "zeta"]
    assert canonical_order(CANONICAL_CLASSES["ckplus"]) == list(CANONICAL_CLASSES["ckplus"])


FER = list(CANONICAL_CLASSES["fer2013"])


def test_class_mapping_keep() -> None:
    keep = ["angry", "fear", "happy", "sad", "surprise", "neutral"]
    mapping = ClassMapping.build(FER, keep=keep)
    assert mapping.names == keep and mapping.num_classes == 6
    assert mapping.label_of("disgust") is None
    assert mapping.label_of("neutral") == 5
    assert mapping.source == FER


def test_class_mapping_rename_and_merge() -> None:
    ck = ["anger", "happy", "sadness", "surprise"]
    renamed = ClassMapping.build(ck, rename={"anger": "angry", "sadness": "sad"})
    assert renamed.names == ["angry", "happy", "sad", "surprise"]  # now in fer2013 order
    assert renamed.lookup == {"anger": 0, "happy": 1, "sadness": 2, "surprise": 3}

    merged = ClassMapping.build(
        ck,
        rename={"anger": "angry", "sadness": "sad"},
        merge={"negative": ["angry", "sad"], "positive": ["happy"]},
        keep=["positive", "negative"],
    )
    assert merged.names == ["positive", "negative"]
    assert merged.lookup == {"anger": 1, "happy": 0, "sadness": 1}
    assert merged.label_of("surprise") is None

    default_order = ClassMapping.build(FER, merge={"negative": ["angry", "disgust", "fear"]})
    assert default_order.names == ["happy", "negative", "neutral", "sad", "surprise"]


def test_class_mapping_round_trip() -> None:
    mapping = ClassMapping.build(FER, merge={"negative": ["angry", "disgust"]})
    restored = ClassMapping.from_dict(json.loads(json.dumps(mapping.to_dict())))
    assert restored == mapping
    with pytest.raises(ConfigError, match="malformed class mapping"):
        ClassMapping.from_dict({"source": FER, "names": ["a"]})
    with pytest.raises(ConfigError, match="out of range"):
        ClassMapping.from_dict({"source": ["a", "b"], "names": ["a", "b"], "lookup": {"a": 2}})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"keep": ["angry", "digust"]},
            "keep: class 'digust' not in the data; classes: angry, disgust, fear, happy, "
            "sad, surprise, neutral",
        ),
        ({"rename": {"anger": "angry"}}, "rename: class 'anger' not in the data"),
        ({"merge": {"neg": ["angry", "sadness"]}}, "merge: class 'sadness' not in the data"),
        ({"merge": {"a": ["angry"], "b": ["angry"]}}, "'angry' is in both 'a' and 'b'"),
        ({"merge": {"a": ["angry", "angry"]}}, "class 'angry' listed twice in 'a'"),
        ({"keep": ["happy"]}, "need at least 2 classes, got 1: happy"),
        ({"keep": ["happy", "happy"]}, "listed twice: happy"),
    ],
)
def test_class_mapping_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClassMapping.build(FER, **kwargs)
    assert message in str(info.value)


def test_parse_class_options() -> None:
    assert parse_class_options(None, None, None) == (None, None, None)
    assert parse_class_options(" ", "", None) == (None, None, None)
    keep, rename, merge = parse_class_options(
        "angry, happy,sad",
        "anger=angry,sadness = sad",
        "negative=angry+disgust+fear;positive=happy",
    )
    assert keep == ["angry", "happy", "sad"]
    assert rename == {"anger": "angry", "sadness": "sad"}
    assert merge == {"negative": ["angry", "disgust", "fear"], "positive": ["happy"]}


@pytest.mark.parametrize(
    ("args", "offending"),
    [
        (("angry,,sad", None, None), "angry,,sad"),
        ((None, "anger:angry", None), "anger:angry"),
        ((None, "anger=angry=x", None), "anger=angry=x"),
        ((None, "a=b,a=c", None), "a=b,a=c"),
        ((None, None, "negative=angry+"), "angry+"),
        ((None, None, "negative"), "negative"),
        ((None, None, "n=a;n=b"), "n=a;n=b"),
    ],
)
def test_parse_class_options_errors(args: tuple, offending: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_class_options(*args)
    assert f"'{offending}'" in str(info.value)


# --- real data -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not FER2013_DIR.is_dir(), reason=f"FER2013 folders not found at {FER2013_DIR}")
def test_real_fer2013_folders() -> None:
    source = load_quietly(FER2013_DIR)
    assert source.kind == "folders"
    assert {name: len(t) for name, t in source.splits.items()} == {
        "train": 28709,
        "val": 3589,
        "test": 3589,
    }
    assert source.classes == FER
    assert source.skipped == []
    assert list(source.splits["train"].class_counts()) == FER


def test_fer2013_csv_as_spreadsheets_write_it(tmp_path: Path) -> None:
    """Usage in any case and emotion codes saved as floats read as FER2013's; another field
    separator gets a hint."""
    path = tmp_path / "fer.csv"
    rows = [fer_row(3, "training"), fer_row(4, "TRAINING"), fer_row(3, "publictest")]
    rows += [fer_row(4, "PublicTest")]
    rows = [row.replace("3,", "3.0,", 1) if row.startswith("3,") else row for row in rows]
    path.write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
    source = load_quietly(path)
    assert source.skipped == []
    assert source.splits["train"].labels == ["happy", "sad"]
    assert source.splits["val"].labels == ["happy", "sad"]
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("emotion;pixels;Usage\n3;" + " ".join(["0"] * 2304) + ";Training\n")
    with pytest.raises(DataError, match=r"\(fields separated by ';'\? ferlab reads commas\)"):
        load_dataset(semicolons)
