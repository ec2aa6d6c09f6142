"""Valence and arousal: metrics, AffectNet loader, VA batches, masked loss, multi-task head."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from affectnet_fixture import learnable_image, write_sample
from ferlab.config import load_config
from ferlab.data.affectnet import EXCLUDED_CLASS, EXCLUDED_VA, read_annotation
from ferlab.data.classes import ClassMapping
from ferlab.data.datamodule import (
    TensorImageDataset,
    load_labelled_split,
    stratified_limit,
)
from ferlab.data.sources import load_dataset
from ferlab.errors import ConfigError, DataError
from ferlab.evaluation.va_metrics import ccc, pearson, regression_metrics, sagr, va_metrics
from ferlab.models.artifact import ModelBundle, load_model_file, save_model_file
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing
from ferlab.training.losses import MultiTaskLoss, concordance, regression_loss

# --- metrics ---------------------------------------------------------------------------------

TRUE = np.array([0.5, -0.5, 1.0, 0.0])
PRED = np.array([0.4, -0.3, 0.7, 0.1])


def test_metrics_against_hand_computed_values() -> None:
    # deviations from the means 0.25 / 0.225: cov 0.20625, var 0.3125 / 0.136875
    found = regression_metrics(TRUE, PRED)
    assert found["samples"] == 4
    assert found["rmse"] == pytest.approx(math.sqrt(0.15 / 4))
    assert found["mae"] == pytest.approx(0.7 / 4)
    assert found["sagr"] == pytest.approx(0.75)  # 0 against 0.1 disagrees
    assert found["ccc"] == pytest.approx(0.4125 / 0.45)  # 2 cov / (0.3125 + 0.136875 + 0.025²)
    assert found["corr"] == pytest.approx(0.20625 / math.sqrt(0.3125 * 0.136875))
    assert found["r2"] == pytest.approx(1 - 0.15 / 1.25)


def test_ccc_identities() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 200)
    assert ccc(x, x) == pytest.approx(1.0)
    shifted = x + 0.3
    assert pearson(x, shifted) == pytest.approx(1.0)
    assert ccc(x, shifted) < pearson(x, shifted) - 0.1
    assert ccc(x, 2 * x) < 1.0 and pearson(x, 2 * x) == pytest.approx(1.0)
    centred = x - x.mean()
    assert ccc(centred, -centred) == pytest.approx(-1.0)
    assert ccc(x, shifted) == pytest.approx(ccc(shifted, x))


def test_sagr_on_a_constructed_case() -> None:
    truth = np.array([0.5, -0.2, 0.0, 0.3, -0.9, 0.1])
    guess = np.array([0.1, 0.4, 0.0, -0.3, -0.1, 0.2])  # agree: 1st, 3rd (0 = 0), 5th, 6th
    assert sagr(truth, guess) == pytest.approx(4 / 6)


def _emonet_reference(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """EmoNet's formulas (face-analysis/emonet, emonet/metrics.py), written out here."""
    pcc = np.corrcoef(truth, pred)[0, 1]
    sd_pred, sd_truth = np.std(pred), np.std(truth)
    return {
        "rmse": np.sqrt(np.mean((truth - pred) ** 2)),
        "sagr": np.mean(np.sign(truth) == np.sign(pred)),
        "corr": pcc,
        "ccc": 2.0
        * pcc
        * sd_pred
        * sd_truth
        / (sd_pred**2 + sd_truth**2 + (np.mean(pred) - np.mean(truth)) ** 2),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_emonets_reference_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(-1, 1, 500)
    pred = np.clip(0.7 * truth + rng.normal(0.1, 0.3, 500), -1, 1)
    found = regression_metrics(truth, pred)
    for name, value in _emonet_reference(truth, pred).items():
        assert found[name] == pytest.approx(value, abs=1e-12), name


def test_undefined_metrics_are_none_and_nan_truths_are_left_out() -> None:
    constant = regression_metrics(np.full(5, 0.2), np.full(5, 0.2))
    assert constant["ccc"] is None and constant["corr"] is None and constant["r2"] is None
    assert constant["rmse"] == 0.0 and constant["sagr"] == 1.0
    empty = regression_metrics(np.zeros(0), np.zeros(0))
    assert empty["samples"] == 0 and empty["rmse"] is None
    truth = np.array([[0.5, np.nan], [-0.5, 0.2], [1.0, np.nan], [0.0, -0.4]])
    pred = np.stack([PRED, np.array([9.0, 0.1, 9.0, -0.3])], axis=1)
    section = va_metrics(truth, pred)
    assert section["valence"] == regression_metrics(TRUE, PRED)
    assert section["arousal"]["samples"] == 2
    assert section["arousal"]["rmse"] == pytest.approx(0.1)


# --- the AffectNet loader -------------------------------------------------------------------


def _tree(root: Path, n: int = 4, codes: tuple[int, ...] = (0, 1, 2)) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n * len(codes)):
        code = codes[i % len(codes)]
        image = learnable_image(code, 0.1, -0.2, rng)
        write_sample(root, f"s{i:02d}", image, code, 0.1 * (i % 5), -0.2, as_string=i % 2 == 0)
    return root


def test_string_and_numeric_annotations_read_as_numbers(tmp_path: Path) -> None:
    cases = {
        "text": np.array("0.4526"),
        "code": np.array("1"),
        "float": np.array(-0.25, dtype=np.float32),
        "int": np.array(7),
        "one": np.array([0.5]),
        "bytes": np.array(b"-1"),
    }
    expected = {"text": 0.4526, "code": 1.0, "float": -0.25, "int": 7.0, "one": 0.5, "bytes": -1}
    for name, array in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        assert read_annotation(tmp_path / f"{name}.npy") == pytest.approx(expected[name])


def test_affectnet_layout_with_train_and_val_sets(tmp_path: Path) -> None:
    _tree(tmp_path / "train_set", n=6)
    _tree(tmp_path / "val_set", n=2)
    source = load_dataset(tmp_path)
    assert source.kind == "affectnet"
    assert set(source.splits) == {"train", "val"}
    assert len(source.splits["train"]) == 18 and len(source.splits["val"]) == 6
    assert sorted(source.classes) == ["happy", "neutral", "sad"]
    train = source.splits["train"]
    assert train.paths is not None and train.paths[0].name == "s00.jpg"
    assert train.labels[:3] == ["neutral", "happy", "sad"]
    assert train.valence is not None and train.arousal is not None
    assert train.valence[:3].tolist() == pytest.approx([0.0, 0.1, 0.2])
    assert train.arousal.tolist() == pytest.approx([-0.2] * 18)
    assert source.excluded == {} and source.skipped == [] and source.loading_note() is None


def test_one_folder_pair_is_split_three_ways(tmp_path: Path) -> None:
    _tree(tmp_path, n=10)
    source = load_dataset(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert {name: len(t) for name, t in source.splits.items()} == {
        "train": 18,
        "val": 6,
        "test": 6,
    }


def test_exclusions_and_missing_annotations_are_counted(tmp_path: Path) -> None:
    _tree(tmp_path, n=4)
    rng = np.random.default_rng(1)
    image = learnable_image(0, 0, 0, rng)
    for i, (code, valence, arousal) in enumerate([(8, 0.1, 0.1), (10, -2, -2), (9, 0.2, 0.3)]):
        write_sample(tmp_path, f"x{i}", image, code, valence, arousal)
    write_sample(tmp_path, "uncertain", image, 3, -2, 0.5)
    write_sample(tmp_path, "no_face", image, 4, 0.5, -2.0, as_string=False)
    write_sample(tmp_path, "lost", image, 1, 0.5, 0.5)
    (tmp_path / "annotations" / "lost_aro.npy").unlink()
    source = load_dataset(tmp_path)
    assert source.excluded == {EXCLUDED_CLASS: 3, EXCLUDED_VA: 2}
    assert sum(len(t) for t in source.splits.values()) == 12
    assert source.skipped == [
        (str(tmp_path / "images" / "lost.jpg"), "missing annotation lost_aro.npy")
    ]
    note = source.loading_note()
    assert note is not None
    assert f"excluded 5 ({EXCLUDED_CLASS}: 3, {EXCLUDED_VA}: 2)" in note
    assert "skipped 1 (first: " in note and "lost.jpg: missing annotation lost_aro.npy" in note
    with pytest.raises(DataError, match=r"lost\.jpg: missing annotation lost_aro\.npy"):
        load_dataset(tmp_path, on_bad_file="error")


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.array([0.1, 0.2, 0.3]), r"array of shape \(3,\), expected one value"),
        (np.zeros((1, 1)), r"array of shape \(1, 1\), expected one value"),
        (np.array(True), "dtype bool, expected a number or a numeric string"),
        (np.array(1 + 2j), "dtype complex128, expected a number or a numeric string"),
        (np.array("abc"), "string 'abc' is not a number"),
        (np.array([{"v": 1}], dtype=object), "not a readable .npy array"),
        (np.array("3.5"), r"valence 3\.5 outside \[-1, 1\]"),
    ],
)
def test_malformed_annotations_are_skipped_with_the_reason(
    tmp_path: Path, array: np.ndarray, reason: str
) -> None:
    _tree(tmp_path, n=4)
    np.save(tmp_path / "annotations" / "s03_val.npy", array, allow_pickle=True)
    source = load_dataset(tmp_path)
    assert sum(len(t) for t in source.splits.values()) == 11
    [(where, why)] = source.skipped
    assert where == str(tmp_path / "annotations" / "s03_val.npy")
    assert re.match(reason, why)
    with pytest.raises(DataError, match=rf"s03_val\.npy: {reason}"):
        load_dataset(tmp_path, on_bad_file="error")


def test_garbage_file_and_fractional_code(tmp_path: Path) -> None:
    _tree(tmp_path, n=4)
    (tmp_path / "annotations" / "s01_aro.npy").write_bytes(b"not numpy at all")
    np.save(tmp_path / "annotations" / "s02_exp.npy", np.array("1.5"))
    source = load_dataset(tmp_path)
    reasons = dict(source.skipped)
    assert reasons[str(tmp_path / "annotations" / "s01_aro.npy")].startswith(
        "not a readable .npy array"
    )
    assert reasons[str(tmp_path / "annotations" / "s02_exp.npy")] == (
        "expression code 1.5 is not an integer"
    )


def test_folder_without_images_is_a_clear_error(tmp_path: Path) -> None:
    _tree(tmp_path / "one", n=2)
    (tmp_path / "one" / "images").rename(tmp_path / "one" / "pictures")
    with pytest.raises(DataError, match=r"one: no images/ folder \(AffectNet layout: "):
        load_dataset(tmp_path / "one")
    _tree(tmp_path / "two" / "train_set", n=2)
    (tmp_path / "two" / "val_set" / "annotations").mkdir(parents=True)
    with pytest.raises(DataError, match=r"val_set: no images/ folder"):
        load_dataset(tmp_path / "two")
    _tree(tmp_path / "three", n=2)
    for file in (tmp_path / "three" / "annotations").iterdir():
        file.unlink()
    with pytest.raises(DataError, match=r"no samples \(6 skipped, first: .*s00\.jpg: missing"):
        load_dataset(tmp_path / "three")


# --- VA batches, stratified limit -----------------------------------------------------------


def test_stratified_limit_is_proportional_and_seeded() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    chosen = stratified_limit(labels, 20, seed=3)
    assert len(chosen) == 20 and torch.equal(chosen, chosen.sort().values)
    assert torch.bincount(labels[chosen]).tolist() == [12, 6, 2]
    assert torch.equal(chosen, stratified_limit(labels, 20, seed=3))
    assert not torch.equal(chosen, stratified_limit(labels, 20, seed=4))
    assert torch.bincount(labels[stratified_limit(labels, 4, seed=0)]).tolist() == [2, 1, 1]
    assert len(stratified_limit(labels, 500, seed=0)) == 100


def test_manifest_rows_without_va_are_masked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["path,label,valence,arousal,split"]
    for i in range(12):
        image = learnable_image(i % 2, 0, 0, rng)
        write_sample(tmp_path, f"m{i}", image, 0, 0, 0)
        valence = "" if i % 3 == 0 else f"{i / 20:.2f}"
        arousal = "" if i % 4 == 0 else "-0.5"
        label = ("happy", "sad")[i % 2]
        lines.append(f"images/m{i}.jpg,{label},{valence},{arousal},{'train' if i < 8 else 'val'}")
    manifest = tmp_path / "data.csv"
    manifest.write_text("\n".join(lines) + "\n")
    source = load_dataset(manifest)
    mapping = ClassMapping.build(source.classes)
    data = load_labelled_split(
        source, "train", mapping, image_size=32, cache_dir=tmp_path / "cache"
    )
    assert data.va is not None and data.va.shape == (8, 2)
    assert torch.isnan(data.va[:, 0]).tolist() == [i % 3 == 0 for i in range(8)]
    assert torch.isnan(data.va[:, 1]).tolist() == [i % 4 == 0 for i in range(8)]
    dataset = TensorImageDataset(data.images, data.labels, lambda image: image.float(), data.va)
    image, label, va, mask = dataset[0]
    assert mask.tolist() == [False, False] and va.tolist() == [0.0, 0.0]
    _, _, va, mask = dataset[1]
    assert mask.tolist() == [True, True] and va.tolist() == pytest.approx([0.05, -0.5])
    assert len(TensorImageDataset(data.images, data.labels, lambda x: x)[0]) == 2


def test_multitask_head_needs_va_labels(pattern_tree: Path, tmp_path: Path) -> None:
    from conftest import quick_options
    from ferlab import train

    options = quick_options(pattern_tree, tmp_path / "runs", head="multitask", epochs=1)
    with pytest.raises(DataError, match="has no valence/arousal values"):
        train(**options)
    assert not (tmp_path / "runs").exists()


def test_config_checks_the_va_options() -> None:
    with pytest.raises(ConfigError, match="va_loss: 'mae' is not one of mse, ccc"):
        load_config(data="x", va_loss="mae").validate()
    with pytest.raises(ConfigError, match=r"valence_weight \(--valence-weight\) must be at"):
        load_config(data="x", valence_weight=-1).validate()
    with pytest.raises(ConfigError, match=r"limit \(--limit\) must be at least 1"):
        load_config(data="x", limit=0).validate()


# --- the masked loss ------------------------------------------------------------------------


def test_masked_mse_ignores_missing_values_and_their_gradients() -> None:
    pred = torch.tensor([0.2, 0.9, -0.4, 0.0], requires_grad=True)
    target = torch.tensor([0.0, -1.0, -0.5, 5.0])
    mask = torch.tensor([True, False, True, False])
    loss = regression_loss(pred, target, mask, "mse")
    assert loss.item() == pytest.approx((0.2**2 + 0.1**2) / 2)
    loss.backward()
    assert pred.grad is not None and pred.grad[1] == 0 and pred.grad[3] == 0
    assert regression_loss(pred, target, torch.zeros(4, dtype=torch.bool), "mse").item() == 0


def test_ccc_loss_is_one_minus_the_evaluation_ccc() -> None:
    rng = np.random.default_rng(0)
    truth, guess = rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)
    expected = ccc(truth, 0.5 * truth + 0.5 * guess)
    pred = torch.tensor(0.5 * truth + 0.5 * guess)
    assert concordance(pred, torch.tensor(truth)).item() == pytest.approx(expected)
    mask = torch.ones(50, dtype=torch.bool)
    mask[::2] = False
    masked = regression_loss(pred, torch.tensor(truth), mask, "ccc").item()
    assert masked == pytest.approx(1 - ccc(truth[1::2], (0.5 * truth + 0.5 * guess)[1::2]))
    one = torch.zeros(50, dtype=torch.bool)
    one[0] = True
    assert regression_loss(pred, torch.tensor(truth), one, "ccc").item() == 0


def test_multitask_loss_adds_weighted_parts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    va_pred, va_true = torch.rand(6, 2) * 2 - 1, torch.rand(6, 2) * 2 - 1
    mask = torch.tensor([[True, True]] * 4 + [[False, True]] * 2)
    loss = MultiTaskLoss(regression="mse", valence_weight=0.5, arousal_weight=2.0)
    total, parts = loss(logits, labels, va_pred, va_true, mask)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    valence = ((va_pred[:4, 0] - va_true[:4, 0]) ** 2).mean()
    arousal = ((va_pred[:, 1] - va_true[:, 1]) ** 2).mean()
    assert parts["ce"].item() == pytest.approx(ce.item())
    assert parts["valence"].item() == pytest.approx(valence.item())
    assert total.item() == pytest.approx((ce + 0.5 * valence + 2.0 * arousal).item())
    no_va = torch.zeros(6, 2, dtype=torch.bool)
    assert loss(logits, labels, va_pred, va_true, no_va)[0].item() == pytest.approx(ce.item())


# --- the multi-task head and model file -----------------------------------------------------


def test_multitask_model_outputs_and_model_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("baseline_cnn", 4, head="multitask").eval()
    assert model.va
    images = torch.randn(3, 1, 48, 48)
    outputs = model.outputs(images)
    assert outputs.shape == (3, 6)
    assert torch.equal(model(images), outputs[:, :4])
    logits, va = model.split(outputs)
    assert va is not None and va.abs().max() <= 1 and torch.equal(logits, outputs[:, :4])
    assert not create_model("baseline_cnn", 4).va
    bundle = ModelBundle(
        model,
        ModelSpec(
            "baseline_cnn",
            ("a", "b", "c", "d"),
            Preprocessing(48, 1, (0.5,), (0.5,)),
            head="multitask",
            va=True,
        ),
    )
    save_model_file(tmp_path / "model.pt", bundle)
    loaded = load_model_file(tmp_path / "model.pt")
    assert loaded.va and loaded.head == "multitask"
    assert torch.equal(loaded.model.outputs(images), outputs)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["spec"]["va"] is True
