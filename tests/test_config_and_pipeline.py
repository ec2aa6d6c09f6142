"""Config loading, the decoded tensor cache, transforms and the data module's sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import make_pattern_tree
from ferlab.config import TrainConfig, load_config
from ferlab.data.cache import cache_key, decode_split
from ferlab.data.classes import ClassMapping
from ferlab.data.datamodule import EpochSampler, FERDataModule, limit_per_class
from ferlab.data.sources import load_dataset
from ferlab.data.transforms import train_transform
from ferlab.errors import ConfigError, DataError
from ferlab.inference.images import load_image
from ferlab.preprocessing import Preprocessing, eval_transform

GRAY = Preprocessing(input_size=48, in_channels=1, mean=(0.5,), std=(0.5,))
IMAGENET = Preprocessing(
    input_size=96, in_channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


# --- config --------------------------------------------------------------------------------


def test_yaml_values_are_typed_and_flags_override(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("data: x\nepochs: '7'\nlr: 0.01\npretrained: 'no'\nkeep: angry,happy\n")
    config = load_config(file, epochs=3)
    assert config.epochs == 3 and config.lr == 0.01 and config.pretrained is False
    assert config.keep == "angry,happy" and config.model == TrainConfig().model
    file.write_text(
        "data: x\nkeep: [angry, happy, sad]\nrename: {anger: angry, sadness: sad}\n"
        "merge: {negative: [angry, sad], other: [happy]}\n"
    )
    config = load_config(file)
    assert config.keep == "angry,happy,sad"
    assert config.rename == "anger=angry,sadness=sad"
    assert config.merge == "negative=angry+sad;other=happy"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: x\nepoch: 3\n", "unknown option(s) epoch"),
        ("data: x\nepochs: 2.5\n", "epochs: expected int"),
        ("data: [x\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("data: x\nepochs: true\n", "epochs: expected int, got True"),
        ("data: x\nmerge: {negative: angry}\n", "merge: expected a mapping of new class"),
        ("data: x\nmodel: [a, b]\n", "model: expected str"),
    ],
)
def test_bad_config_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert str(file) in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "no data set given"),
        ({"data": "x", "scheduler": "cosine"}, "scheduler: 'cosine' is not one of"),
        ({"data": "x", "epochs": 0}, r"epochs \(--epochs\) must be at least 1"),
        ({"data": "x", "label_smoothing": 1.5}, r"label_smoothing \(--label-smoothing\)"),
        ({"data": "x", "num_workers": 100000}, r"num_workers \(--num-workers\) must be at most"),
        ({"data": "x", "name": "../escape"}, r"name \(--name\) must be a folder name"),
        ({"data": "x", "name": "a/b"}, "not a path: 'a/b'"),
        ({"data": "x", "name": "."}, "must be a folder name"),
    ],
)
def test_validate_rejects_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(**overrides).validate()


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_config(data="d", model="resnet18", epochs=4, keep="a,b")
    config.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"] == "resnet18"


# --- decoded cache -------------------------------------------------------------------------


def test_decode_split_caches_on_disk_keyed_by_the_file_list(tmp_path: Path) -> None:
    tree = make_pattern_tree(tmp_path / "data", {"train": 3, "val": 2})
    table = load_dataset(tree).splits["train"]
    first = decode_split(table, image_size=48, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("train-*.pt"))
    assert len(files) == 1
    assert first.images.shape == (9, 1, 48, 48) and first.images.dtype == torch.uint8
    expected = np.array(Image.open(table.paths[4]))
    assert torch.equal(first.images[4, 0], torch.from_numpy(expected))
    again = decode_split(table, image_size=48, cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, again.images)
    assert cache_key(table, 48, "gray") != cache_key(table.subset([0, 1]), 48, "gray")
    assert cache_key(table, 48, "gray") != cache_key(table, 64, "gray")
    before = cache_key(table, 48, "gray")
    Image.new("L", (48, 48), 7).save(table.paths[0])
    assert cache_key(table, 48, "gray") != before
    assert decode_split(table, image_size=48, cache_dir=tmp_path / "cache").images[0].max() == 7


def test_decode_resizes_and_converts_modes(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "train"
    rgba = Image.new("RGBA", (100, 80), (255, 0, 0, 128))
    (folder / "happy").mkdir(parents=True)
    (folder / "sad").mkdir(parents=True)
    rgba.save(folder / "happy" / "rgba.png")
    Image.new("CMYK", (30, 30), (0, 255, 0, 0)).save(folder / "sad" / "cmyk.jpg")
    deep = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sad" / "deep.png")
    for split in ("val",):
        make_pattern_tree(tmp_path / "data", {split: 1}, ("happy", "sad"))
    table = load_dataset(tmp_path / "data").splits["train"]
    gray = decode_split(table, image_size=32, cache_dir=tmp_path / "c")
    assert gray.images.shape == (3, 1, 32, 32) and not gray.skipped
    assert gray.images[2].max() > 200  # the 16-bit ramp keeps its range
    rgb = decode_split(table, image_size=32, color="rgb", cache_dir=tmp_path / "c")
    assert rgb.images.shape == (3, 3, 32, 32)


def test_training_decodes_files_as_prediction_does(tmp_path: Path) -> None:
    """EXIF rotation, alpha onto white and 16-bit scaling: the pixels a model learns from are the
    pixels it is later given."""
    folder = tmp_path / "data" / "train" / "happy"
    folder.mkdir(parents=True)
    sideways = np.zeros((48, 64, 3), np.uint8)
    sideways[:, :32] = 250  # left half bright as stored; upright (EXIF 6), the top half is
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(sideways).save(folder / "phone.jpg", exif=exif, quality=95)
    clear = np.zeros((48, 48, 4), np.uint8)
    Image.fromarray(clear, "RGBA").save(folder / "cutout.png")
    dark = np.full((48, 48), 4000, np.uint16)
    Image.fromarray(dark).save(folder / "dark16.png")
    make_pattern_tree(tmp_path / "data", {"val": 1}, ("happy",))
    table = load_dataset(tmp_path / "data").splits["train"]
    decoded = decode_split(table, image_size=48, cache_dir=tmp_path / "c")
    by_name = {
        table.paths[row].name: image[0].numpy()
        for row, image in zip(decoded.rows.tolist(), decoded.images, strict=True)
    }
    for name, image in by_name.items():
        predicted = np.asarray(
            Image.fromarray(load_image(folder / name))
            .convert("L")
            .resize((48, 48), Image.Resampling.BILINEAR)
        )
        assert np.array_equal(image, predicted), name
    phone = by_name["phone.jpg"]
    assert phone[:16].mean() > 200 and phone[-16:].mean() < 50  # rotated upright
    assert (by_name["cutout.png"] == 255).all()  # transparent → white
    assert by_name["dark16.png"].max() == 4000 // 257  # not stretched to 255


def test_corrupt_and_truncated_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    tree = make_pattern_tree(tmp_path / "data", {"train": 2, "val": 1})
    good = (tree / "train" / "sad" / "000.png").read_bytes()
    (tree / "train" / "sad" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tree / "train" / "happy" / "text.png").write_text("not an image")
    table = load_dataset(tree).splits["train"]
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        decoded = decode_split(table, image_size=48, cache_dir=tmp_path / "c")
    assert len(decoded.images) == len(table) - 2
    assert {Path(name).name for name, _ in decoded.skipped} == {"truncated.png", "text.png"}
    kept_paths = [table.paths[i].name for i in decoded.rows.tolist()]
    assert "truncated.png" not in kept_paths and "text.png" not in kept_paths
    with pytest.raises(DataError, match=r"(truncated|text)\.png: cannot read image"):
        decode_split(table, image_size=48, on_bad_file="error", cache_dir=tmp_path / "c")


# --- transforms ----------------------------------------------------------------------------


def test_eval_transform_resizes_normalises_and_repeats_gray() -> None:
    image = torch.full((1, 48, 48), 255, dtype=torch.uint8)
    out = eval_transform(IMAGENET)(image)
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    expected = (1.0 - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    assert torch.allclose(out[:, 50, 50], expected, atol=1e-5)
    gray = eval_transform(GRAY)(torch.zeros((2, 1, 48, 48), dtype=torch.uint8))
    assert gray.shape == (2, 1, 48, 48) and torch.allclose(gray, torch.full_like(gray, -1.0))


@pytest.mark.parametrize("preset", ["none", "light", "standard", "strong"])
def test_train_presets_give_model_input(preset: str) -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 48, 48), dtype=torch.uint8)
    out = train_transform(preset, IMAGENET)(image)
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    if preset != "none":
        outs = [train_transform(preset, IMAGENET)(image) for _ in range(4)]
        assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        train_transform("wild", GRAY)


# --- sampling ------------------------------------------------------------------------------


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler(50, seed=3)
    sampler.set_epoch(2)
    order = list(sampler)
    assert {epoch for epoch, _ in order} == {2}
    assert sorted(index for _, index in order) == list(range(50))
    assert list(EpochSampler(50, seed=3, epoch=2)) == order
    sampler.set_epoch(3)
    assert [index for _, index in sampler] != [index for _, index in order]


def test_balanced_sampling_evens_out_classes(tmp_path: Path) -> None:
    tree = make_pattern_tree(tmp_path / "d", {"train": 4, "val": 2})
    for i in range(36):  # make "happy" ten times as common as the others
        Image.new("L", (48, 48), i).save(tree / "train" / "happy" / f"extra{i}.png")
    source = load_dataset(tree)
    mapping = ClassMapping.build(source.classes)
    module = FERDataModule(
        source,
        mapping,
        GRAY,
        image_size=48,
        batch_size=8,
        balance="sampler",
        num_workers=0,
        cache_dir=tmp_path / "c",
    )
    module.setup()
    assert module.class_counts().tolist() == [40, 4, 4]
    labels = module.splits["train"].labels
    sampler = module.train_dataloader().sampler
    assert len(list(sampler)) == 48
    counts = torch.zeros(3)
    for epoch in range(20):
        sampler.set_epoch(epoch)
        counts += torch.bincount(labels[[index for _, index in sampler]], minlength=3)
    share = counts / counts.sum()
    assert torch.all((share > 0.25) & (share < 0.42)), share


def test_limit_per_class_is_seeded_and_capped() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    chosen = limit_per_class(labels, 4, seed=1)
    assert torch.bincount(labels[chosen]).tolist() == [4, 3, 4]
    assert torch.equal(chosen, limit_per_class(labels, 4, seed=1))


def test_devices_are_parsed_as_lightning_takes_them() -> None:
    from ferlab.config import parse_devices

    assert parse_devices("auto") == "auto" and parse_devices(" 2 ") == 2
    assert parse_devices("-1") == -1 and parse_devices("0,1") == [0, 1]
    assert parse_devices("0,") == [0]
    for bad in ("0", "two", "1,,2", ""):
        with pytest.raises(ConfigError, match="devices: expected a count of at least 1"):
            parse_devices(bad)
