"""Crowd labels: the votes CSV reader, majority and distribution targets, soft-label training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_pattern_tree, quick_options
from ferlab import evaluate, train
from ferlab.data.classes import ClassMapping
from ferlab.data.datamodule import load_labelled_split
from ferlab.data.soft_labels import attach_votes, mapped_votes, read_vote_table
from ferlab.data.sources import load_dataset
from ferlab.errors import DataError
from ferlab.training.module import FERClassifier

HEADER = "file,ferplus_image,neutral,happiness,surprise,sadness,anger,unknown,NF"


def write_votes(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_reader_maps_names_ignores_text_columns_and_reports_bad_rows(tmp_path: Path) -> None:
    table = read_vote_table(
        write_votes(
            tmp_path / "votes.csv",
            [
                "train/a/1.png,fer1.png,1,7,0,0,2,0,0",
                "train/a/2.png,fer2.png,0,0,0,0,0,0,0",  # no votes
                "train/a/3.png,fer3.png,1,x,0,0,2,0,0",  # not a number
                "train/a/4.png,fer4.png,1,-1,0,0,2,0,0",  # negative
                "train/a/1.png,fer5.png,1,1,0,0,2,0,0",  # second row for the same file
                "train/a/6.png,fer6.png,1,1",  # short row
                "train/a/7.png,fer7.png,0.1,0.2,0.3,0.1,0.1,0.2,0",  # probabilities
            ],
        )
    )
    assert table.columns == ["neutral", "happy", "surprise", "sad", "angry", "unknown", "NF"]
    assert table.classes == ["angry", "happy", "sad", "surprise", "neutral"]
    assert table.files == ["train/a/1.png", "train/a/7.png"]
    reasons = [reason for _, reason in table.bad_rows]
    assert reasons == [
        "no votes for train/a/2.png",
        "a vote is not a number for train/a/3.png",
        "a negative vote for train/a/4.png",
        "second row for train/a/1.png",
        "4 fields, expected 9",
    ]
    assert table.bad_rows[0][0].endswith("votes.csv:line 3")
    assert table.lines == [2, 8]
    assert table.bad_files == {"train/a/2.png", "train/a/3.png", "train/a/4.png"}
    np.testing.assert_allclose(table.votes[1], [0.1, 0.2, 0.3, 0.1, 0.1, 0.2, 0.0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty labels file"),
        ("image,happy,sad\nx.png,1,2\n", "no file column in header 'image,happy,sad'"),
        ("file,happy,unknown\nx.png,1,2\n", "fewer than 2 class columns"),
        ("file,happy,sad\nx.png,-1,2\n", "no usable rows of votes (first: "),
    ],
)
def test_reader_refuses_unusable_files_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "votes.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=r"votes\.csv") as error:
        read_vote_table(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_majority_ties_merges_and_classes_that_name_nothing() -> None:
    columns = ["neutral", "happy", "sad", "angry", "unknown", "NF"]
    votes = np.array(
        [
            [2, 7, 0, 1, 0, 0],  # happy
            [4, 0, 4, 0, 2, 0],  # tie neutral/sad: the first column wins
            [1, 0, 1, 1, 6, 1],  # unknown: left out
            [0, 3, 3, 4, 0, 0],  # angry alone; sad+angry merged (7) beats happy
        ],
        dtype=float,
    )
    plain = ClassMapping.build(["angry", "happy", "sad", "neutral"])
    targets, majority = mapped_votes(votes, columns, plain)
    assert [plain.names[m] if m >= 0 else None for m in majority] == [
        "happy",
        "neutral",
        None,
        "angry",
    ]
    np.testing.assert_allclose(targets[0], [1, 7, 0, 2])  # angry, happy, sad, neutral
    merged = ClassMapping.build(
        ["angry", "happy", "sad", "neutral"], merge={"negative": ["sad", "angry"]}
    )
    targets, majority = mapped_votes(votes, columns, merged)
    assert merged.names[majority[3]] == "negative"
    assert targets[3, merged.names.index("negative")] == 7
    kept = ClassMapping.build(["angry", "happy", "sad", "neutral"], keep=["happy", "sad"])
    _, majority = mapped_votes(votes, columns, kept)
    assert majority.tolist() == [0, -1, -1, -1]  # neutral's and angry's majorities drop out


def _votes_tree(tmp_path: Path) -> tuple[Path, Path]:
    """The pattern tree (happy/sad/surprise by bright half) and votes that agree with its folders
    on most images, with one 'unknown' majority, one image without a row and one stray row."""
    root = make_pattern_tree(tmp_path / "data", {"train": 24, "val": 6})
    rows = []
    rng = np.random.default_rng(0)
    columns = ["happy", "sad", "surprise"]
    for image in sorted(root.glob("*/*/*.png")):
        rel = image.relative_to(root).as_posix()
        if rel == "train/happy/000.png":
            continue
        counts = (
            rng.multinomial(3, [1 / 3] * 3)
            + np.eye(3, dtype=int)[columns.index(image.parent.name)] * 7
        )
        unknown = 11 if rel == "train/sad/001.png" else 0
        rows.append(f"{rel},{','.join(map(str, counts))},{unknown}")
    rows.append("train/happy/missing.png,1,0,0,0")
    return root, write_votes(
        tmp_path / "votes.csv", rows, "file,happiness,sadness,surprise,unknown"
    )


def test_votes_laid_over_a_folder_tree(tmp_path: Path) -> None:
    root, csv_path = _votes_tree(tmp_path)
    source, report = attach_votes(load_dataset(root), read_vote_table(csv_path))
    assert source.classes == ["happy", "sad", "surprise"]
    assert report.without_row == ["train/happy/000.png"]
    assert report.unused_rows == 1
    assert dict(report.majority_excluded) == {"unknown": 1}
    assert "1 images without a row" in report.summary()
    assert "majority unknown: 1" in str(source.loading_note())
    assert source.label_only_classes == []
    stray_line = len(csv_path.read_text().splitlines())
    assert source.skipped == [(str(root / "train/happy/000.png"), "no row in the labels file")]
    assert source.unmatched_rows == [
        (f"{csv_path}:line {stray_line}", "no image train/happy/missing.png in the data")
    ]
    assert "skipped 1 (first: " in str(source.loading_note())
    assert "; 1 labels row(s) unused, their image not in the data (first: " in str(
        source.loading_note()
    )
    mapping = ClassMapping.build(source.classes)
    data = load_labelled_split(source, "train", mapping, image_size=48)
    assert len(data.labels) == 3 * 24 - 2
    dist = data.distributions()
    assert dist is not None
    torch.testing.assert_close(dist.sum(dim=1), torch.ones(len(dist)))
    assert (dist.argmax(dim=1) == data.labels).all()
    prior = data.class_prior(3)
    assert prior.shape == (3,) and abs(float(prior.sum()) - 1) < 1e-5


def test_a_bad_row_is_reported_once_and_rows_that_match_nothing_are_an_error(
    tmp_path: Path,
) -> None:
    root, csv_path = _votes_tree(tmp_path)
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",-1,0,0,0"
    csv_path.write_text("\n".join(lines) + "\n")
    source, _ = attach_votes(load_dataset(root), read_vote_table(csv_path))
    first = lines[1].split(",")[0]
    assert [reason for where, reason in source.skipped if first in where + reason] == [
        f"a negative vote for {first}"
    ]
    elsewhere = write_votes(
        tmp_path / "elsewhere.csv",
        [f"{tmp_path / 'other/happy/001.png'},5,0,0,0", "train/sad/none.png,0,5,0,0"],
        "file,happy,sad,surprise,unknown",
    )
    with pytest.raises(DataError, match=r"elsewhere\.csv: none of its 2 rows names an image"):
        attach_votes(load_dataset(root), read_vote_table(elsewhere))


def test_votes_beyond_float32_are_bad_rows_not_nan_targets(tmp_path: Path) -> None:
    """Training reads votes as float32: rows whose sum it cannot hold are reported as bad rows,
    and every target left sums to 1."""
    root, csv_path = _votes_tree(tmp_path)
    lines = csv_path.read_text().splitlines()
    huge, overflowing, tiny = (line.split(",")[0] for line in lines[1:4])
    lines[1:4] = [
        f"{huge},1e308,1e308,1e308,0",
        f"{overflowing},2e38,2e38,0,0",
        f"{tiny},1e-40,0,0,0",
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    table = read_vote_table(csv_path)
    reason = "votes sum outside float32's range (1.2e-38 to 3.4e+38)"
    assert table.bad_rows == [
        (f"{csv_path}:line {n}", f"{reason} for {name}")
        for n, name in enumerate((huge, overflowing, tiny), start=2)
    ]
    source, report = attach_votes(load_dataset(root), table)
    assert f"3 bad rows (first: {csv_path}:line 2: {reason} for {huge})" in report.summary()
    data = load_labelled_split(source, "train", ClassMapping.build(source.classes), image_size=48)
    assert len(data.labels) == 3 * 24 - 2 - 3
    dist = data.distributions()
    assert dist is not None and torch.isfinite(dist).all()
    torch.testing.assert_close(dist.sum(dim=1), torch.ones(len(dist)))


def test_columns_rows_and_paths_are_matched_as_a_user_writes_them(tmp_path: Path) -> None:
    """Any case of a class name, absolute paths under the root, Windows separators; a numeric
    column that is no class (an age) and a typo are left out, with a warning naming them."""
    root = make_pattern_tree(tmp_path / "data", {"train": 4, "val": 2})
    rows = [
        f"{root / 'train/happy/001.png'},9,0,0,35",
        "train\\sad\\001.png,0,9,0,41",
        "./train/surprise/001.png,0,0,9,29",
        "train/happy/002.png,0,2,0,35",
    ]
    csv_path = write_votes(tmp_path / "votes.csv", rows, "path,Happy,SADNESS,Surprise,age")
    with pytest.warns(UserWarning, match=r"votes\.csv: left out column\(s\) age: numbers, but"):
        source, _ = attach_votes(load_dataset(root), read_vote_table(csv_path))
    assert source.classes == ["happy", "sad", "surprise"]
    train = source.splits["train"]
    labelled = dict(zip(map(str, train.paths), train.labels, strict=True))
    assert labelled == {
        str(root / "train/happy/001.png"): "happy",
        str(root / "train/sad/001.png"): "sad",
        str(root / "train/surprise/001.png"): "surprise",
        str(root / "train/happy/002.png"): "sad",
    }
    typo = write_votes(
        tmp_path / "typo.csv",
        [f"train/happy/00{i}.png,5,0,0,1" for i in range(1, 4)],
        "file,happy,sad,surprize,unknown",
    )
    with pytest.warns(UserWarning) as caught:
        source, _ = attach_votes(load_dataset(root), read_vote_table(typo))
    messages = [str(w.message) for w in caught]
    assert any("left out column(s) surprize" in m for m in messages)
    assert any("no column for class(es) surprise of the data" in m for m in messages)
    assert source.classes == ["happy", "sad"]


def test_distribution_loss_is_cross_entropy_against_the_votes() -> None:
    from ferlab.models.registry import create_model

    module = FERClassifier(create_model("baseline_cnn", 3, pretrained=False), 3, label_smoothing=0)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([[0.7, 0.2, 0.1]])
    log_p = torch.log_softmax(logits, dim=1)
    expected = -(target * log_p).sum()
    module._outputs = lambda images: (logits, None)  # type: ignore[method-assign]
    loss, _, _ = module._step((torch.zeros(1), torch.tensor([0]), target), "train")
    # by hand: log-softmax of (2, 0, -1) is (-0.1698, -2.1698, -3.1698)
    assert abs(float(expected) - 0.8698) < 1e-3
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("label_mode", ["distribution", "majority"])
def test_training_with_labels_learns_and_records_the_mode(tmp_path: Path, label_mode: str) -> None:
    root, csv_path = _votes_tree(tmp_path)
    result = train(
        **quick_options(root, tmp_path / "runs", labels=str(csv_path), label_mode=label_mode)
    )
    assert result.best_val_acc is not None and result.best_val_acc > 0.5  # majority rate 1/3
    payload = torch.load(result.model_file, weights_only=True)
    assert payload["spec"]["label_mode"] == label_mode
    assert payload["spec"]["label_source"] == str(csv_path)
    assert len(payload["spec"]["class_prior"]) == 3
    assert "labels file" in str(result.data_note)
    trained_on = evaluate(result.run_dir, split="val", out=tmp_path / "own")
    given = evaluate(result.run_dir, root, split="val", labels=csv_path, out=tmp_path / "given")
    assert trained_on.metrics["data"] == str(root)
    assert trained_on.metrics["labels"] == str(csv_path) and "crowd" in trained_on.metrics
    assert trained_on.metrics["accuracy"] == given.metrics["accuracy"]
    assert trained_on.metrics["crowd"] == given.metrics["crowd"]


@pytest.mark.parametrize(
    "options",
    [
        {"balance": "loss"},
        {"balance": "sampler", "label_smoothing": 0.2},
        {"strategy": "progressive", "unfreeze_every": 1},
        {"keep": "happy,sad"},
    ],
)
def test_distribution_training_works_with_balancing_smoothing_strategies_and_classes(
    tmp_path: Path, options: dict[str, object]
) -> None:
    root, csv_path = _votes_tree(tmp_path)
    result = train(**quick_options(root, tmp_path / "runs", labels=str(csv_path), **options))
    payload = torch.load(result.model_file, weights_only=True)
    expected = ["happy", "sad"] if "keep" in options else ["happy", "sad", "surprise"]
    assert payload["spec"]["classes"] == expected
    assert result.best_val_acc is not None and result.best_val_acc > 1 / len(expected)
