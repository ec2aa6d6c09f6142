"""Grad-CAM heatmaps, `ferlab explain`, McNemar's test and `ferlab compare`."""

from __future__ import annotations

import math
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, quick_options
from ferlab import train
from ferlab.cli import main
from ferlab.commands.explain import METHOD_CHOICES
from ferlab.errors import ConfigError
from ferlab.evaluation.compare import compare_models, mcnemar
from ferlab.inference import Recognizer
from ferlab.inference.detect import detect_faces, square_crop
from ferlab.inference.explain import explain_image, load_explainable
from ferlab.inference.face_options import FaceOptions
from ferlab.inference.gradcam import (
    METHODS,
    default_target_layer,
    gradcam_heatmaps,
    gradcam_overlays,
)
from ferlab.inference.images import load_image
from ferlab.inference.runner import TorchModel
from ferlab.models.artifact import ModelBundle, load_model_file, save_model_file
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing

QUADRANT_CLASSES = ("across", "down")
PHOTOS = [REPO.parent / "shared" / "data" / "photos", Path("/work/shared/data/photos")]
STRIPES = np.where(np.arange(24) // 4 % 2 == 0, 235, 20).astype(np.uint8)


def quadrant_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """48x48 gray noise whose top-left quadrant alone tells the class: horizontal stripes
    ("across") or vertical ones ("down")."""
    image = rng.integers(108, 148, (48, 48)).astype(np.uint8)
    image[:24, :24] = STRIPES[:, None] if label == 0 else STRIPES[None, :]
    return image


@pytest.fixture(scope="module")
def quadrant_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quadrant")
    rng = np.random.default_rng(0)
    for split, count in {"train": 32, "val": 8, "test": 12}.items():
        for label, name in enumerate(QUADRANT_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(quadrant_image(label, rng)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def quadrant_run(quadrant_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    result = train(**quick_options(quadrant_tree, tmp_path_factory.mktemp("runs")))
    return result.run_dir


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained baseline CNN with the quadrant classes, as a bare model file."""
    torch.manual_seed(1)
    bundle = ModelBundle(
        model=create_model("baseline_cnn", 2).eval(),
        spec=ModelSpec("baseline_cnn", QUADRANT_CLASSES, Preprocessing(48, 1, (0.5,), (0.5,))),
    )
    path = tmp_path_factory.mktemp("random") / "random.pt"
    save_model_file(path, bundle)
    return path


def _test_images(tree: Path) -> tuple[torch.Tensor, list[int]]:
    files = [
        (label, path)
        for label, name in enumerate(QUADRANT_CLASSES)
        for path in sorted((tree / "test" / name).glob("*.png"))
    ]
    images = torch.stack([torch.from_numpy(np.array(Image.open(p)))[None] for _, p in files])
    return images, [label for label, _ in files]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_peaks_in_the_quadrant_that_decides(
    quadrant_run: Path, quadrant_tree: Path, method: str
) -> None:
    bundle = load_model_file(quadrant_run / "model.pt")
    images, labels = _test_images(quadrant_tree)
    heatmaps = gradcam_heatmaps(bundle, images, labels, method=method)
    assert heatmaps.shape == (len(images), 48, 48) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    peaks = [np.unravel_index(h.argmax(), h.shape) for h in heatmaps]
    in_quadrant = [
        h.max() > 0 and y < 24 and x < 24 for h, (y, x) in zip(heatmaps, peaks, strict=True)
    ]
    assert np.mean(in_quadrant) >= 0.8, peaks
    mass = heatmaps[:, :24, :24].sum(axis=(1, 2)) / (heatmaps.sum(axis=(1, 2)) + 1e-9)
    assert np.median(mass) > 0.35  # a quarter of the area holds well over a quarter of the mass


def test_overlays_and_options(random_model: Path) -> None:
    bundle = load_model_file(random_model)
    images = torch.randint(0, 256, (3, 1, 40, 36), dtype=torch.uint8)
    overlays = gradcam_overlays(images, gradcam_heatmaps(bundle, images, [0, 1, 0], "eigencam"))
    assert overlays.shape == (3, 40, 36, 3) and overlays.dtype == np.uint8
    assert gradcam_heatmaps(bundle, images, method="scorecam", target_layer="block2").shape == (
        3,
        40,
        36,
    )
    assert default_target_layer(bundle.model) == "block3"  # "fc", the last stage, has no map
    assert tuple(METHODS) == METHOD_CHOICES
    with pytest.raises(ConfigError, match="unknown CAM method 'lime'"):
        gradcam_heatmaps(bundle, images, method="lime")
    with pytest.raises(ConfigError, match="'block9' is not a module"):
        gradcam_heatmaps(bundle, images, target_layer="block9")
    with pytest.raises(ConfigError, match="'fc' gives no spatial map"):
        gradcam_heatmaps(bundle, images, target_layer="fc")
    with pytest.raises(ConfigError, match="target class 5 out of range"):
        gradcam_heatmaps(bundle, images, [0, 5, 1])


def test_vit_tokens_become_a_map() -> None:
    torch.manual_seed(0)
    model = create_model("vit_b_16", 2).eval()
    info = model.info
    bundle = ModelBundle(
        model, ModelSpec("vit_b_16", ("a", "b"), Preprocessing(224, 3, info.mean, info.std))
    )
    assert default_target_layer(model) == "encoder.layers.group3.encoder_layer_11.ln_1"
    heatmaps = gradcam_heatmaps(bundle, torch.randint(0, 256, (1, 1, 48, 48), dtype=torch.uint8))
    assert heatmaps.shape == (1, 48, 48) and heatmaps.max() > heatmaps.min()


def test_mcnemar_exact_and_chi_square() -> None:
    def vectors(b: int, c: int, both: int = 5) -> tuple[np.ndarray, np.ndarray]:
        a = np.array([True] * b + [False] * c + [True] * both)
        return a, np.array([False] * b + [True] * c + [True] * both)

    exact = mcnemar(*vectors(10, 2))
    assert (exact.b, exact.c, exact.method) == (10, 2, "exact")
    assert exact.p == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 2 P(X <= 2), X ~ Bin(12, 1/2)
    assert exact.p == pytest.approx(0.0386, abs=1e-4)
    chi = mcnemar(*vectors(30, 10))
    statistic = (abs(30 - 10) - 1) ** 2 / 40
    assert chi.method == "chi2"
    assert chi.p == pytest.approx(math.erfc(math.sqrt(statistic / 2)))  # chi-square, 1 dof
    assert mcnemar(*vectors(13, 12)).method == "chi2" and mcnemar(*vectors(12, 12)).p == 1.0
    assert mcnemar(*vectors(0, 0)).p == 1.0


def test_compare_two_models(
    quadrant_run: Path, random_model: Path, quadrant_tree: Path, tmp_path: Path, capsys
) -> None:
    comparison = compare_models([quadrant_run, random_model], quadrant_tree)
    trained, untrained = comparison.scores
    assert trained.samples == untrained.samples == 24
    assert trained.accuracy > 0.9 and trained.train_seconds is not None
    assert untrained.train_seconds is None and trained.params == untrained.params
    assert trained.faces_per_s > 0 and 0 <= trained.ece <= 1
    (pair,) = comparison.pairs
    assert pair.samples == 24 and pair.test.b - pair.test.c == round(
        24 * (trained.accuracy - untrained.accuracy)
    )
    assert pair.significant == (pair.test.p < 0.05)

    out = tmp_path / "cmp"
    refs = [str(quadrant_run), str(random_model), "--data", str(quadrant_tree)]
    code = main(["compare", *refs, "--out", str(out), "--alpha", "0.01"])
    printed = capsys.readouterr().out
    assert code == 0
    assert str(quadrant_run) in printed and str(random_model) in printed and "n/a" in printed
    assert f"{pair.test.p:.4g}" in printed and "p < 0.01" in printed
    assert (out / "compare.md").read_text() in printed
    page = (out / "compare.html").read_text()
    assert page.count("<tr>") == 2 + 2 + 1 and "random.pt" in page  # headers, models, pair
    assert main(["compare", str(random_model), str(random_model), "--data", "x"]) == 2
    capsys.readouterr()
    spelt_twice = [str(quadrant_run), str(quadrant_run / "model.pt"), "--data", str(quadrant_tree)]
    assert main(["compare", *spelt_twice, "--out", str(tmp_path / "twice")]) == 2
    assert f"{quadrant_run / 'model.pt'}: the same model file as {quadrant_run}" in (
        capsys.readouterr().err
    )


def test_compare_maps_classes_for_every_model_and_names_the_one_that_cannot(
    quadrant_run: Path, random_model: Path, quadrant_tree: Path, tmp_path: Path, capsys
) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(quadrant_tree, extra)
    for split in ("train", "val", "test"):
        shutil.copytree(extra / split / QUADRANT_CLASSES[0], extra / split / "contempt")
    refs = [str(quadrant_run), str(random_model), "--data", str(extra)]
    assert main(["compare", *refs, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ferlab: error: {quadrant_run}: the data has classes the model does")
    assert "contempt" in err and len(err.splitlines()) == 1
    keep = ",".join(QUADRANT_CLASSES)
    (extra / "test" / QUADRANT_CLASSES[0] / "broken.png").write_bytes(b"not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["compare", *refs, "--keep", keep, "--out", str(tmp_path / "b")]) == 0
    skipped = [
        w for w in caught if "skipped 1 unreadable file(s) in test: broken" in str(w.message)
    ]
    assert len(skipped) == 1  # once, not once per model
    comparison = compare_models([quadrant_run, random_model], extra, keep=keep)
    assert [score.samples for score in comparison.scores] == [24, 24]


def test_compare_warns_when_a_model_drew_other_splits(
    random_model: Path, quadrant_tree: Path, tmp_path: Path
) -> None:
    """Data without fixed splits: a model trained with another seed drew another test split,
    which may hold images it trained on."""
    flat = tmp_path / "flat"
    shutil.copytree(quadrant_tree / "train", flat)
    other = tmp_path / "seed7.pt"
    bundle = load_model_file(random_model)
    save_model_file(other, ModelBundle(bundle.model, replace(bundle.spec, seed=7)))
    with pytest.warns(UserWarning, match=r"seed7\.pt: trained with seed 7 \(not 0\): this data"):
        compare_models([random_model, other], flat)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_models([random_model, other], quadrant_tree)  # fixed splits: nothing to say


@pytest.fixture(scope="module")
def astronaut() -> Path:
    found = next((p / "astronaut.png" for p in PHOTOS if (p / "astronaut.png").is_file()), None)
    if found is None:
        pytest.skip("test photos not found at ../shared/data/photos")
    return found


def test_explain_writes_one_overlay_per_face(
    astronaut: Path, quadrant_run: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    args = ["explain", str(bad), str(astronaut), str(tmp_path / "missing.png")]
    assert main([*args, "--model", str(quadrant_run), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    whole, crop_file = sorted(out.glob("*.png"))
    assert whole.name == "astronaut_explained.png" and crop_file.name.startswith("astronaut_face1_")
    assert crop_file.stem.split("_")[-1] in QUADRANT_CLASSES
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{whole}  1 face, probabilities w")
    assert lines[1].startswith(str(crop_file))
    assert len(captured.err.splitlines()) == 2 and "bad.png" in captured.err
    image = load_image(astronaut)
    (face,) = detect_faces(image)
    crop = square_crop(image, face.box)
    with Image.open(crop_file) as overlay:
        assert overlay.mode == "RGB" and overlay.size == (crop.shape[1], crop.shape[0])
    with Image.open(whole) as figure:
        assert figure.width > 600 and _has_colour_bar(np.asarray(figure.convert("RGB")))


def test_explain_writes_all_of_a_photos_pictures_or_none(
    astronaut: Path, quadrant_run: Path, tmp_path: Path, capsys
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(astronaut, photos / "astronaut.png")
    out = tmp_path / "out"
    args = ["explain", str(photos), "--model", str(quadrant_run), "--out", str(out)]
    for target in QUADRANT_CLASSES:
        code = main([*args, "--target-class", target])
        if target == QUADRANT_CLASSES[0]:
            assert code == 0
            first = {path.name: path.read_bytes() for path in out.iterdir()}
    assert code == 2
    err = capsys.readouterr().err
    assert "astronaut_explained.png: already exists" in err and len(err.splitlines()) == 1
    assert {path.name: path.read_bytes() for path in out.iterdir()} == first
    inside = ["explain", str(photos), "--model", str(quadrant_run), "--out", str(photos / "x")]
    for own in ([], ["--exist-ok"]):
        assert main([*inside, *own]) == 2
        assert "inside the data folder" in capsys.readouterr().err
    assert [path.name for path in photos.iterdir()] == ["astronaut.png"]


def _has_colour_bar(figure: np.ndarray) -> bool:
    """Whether a column in the right fifth runs from dark red (top) to dark blue (bottom)."""
    for x in range(figure.shape[1] * 4 // 5, figure.shape[1]):
        column = figure[:, x].astype(int)
        red = np.flatnonzero((column[:, 0] > 100) & (column[:, 1] < 30) & (column[:, 2] < 30))
        blue = np.flatnonzero((column[:, 2] > 100) & (column[:, 0] < 30) & (column[:, 1] < 30))
        if len(red) > 5 and len(blue) > 5 and red.mean() < blue.mean():
            return True
    return False


def test_explain_reports_the_probability_predict_gives(astronaut: Path, quadrant_run: Path) -> None:
    bundle = load_explainable(quadrant_run)
    recognizer = Recognizer(TorchModel(bundle), tta="flip")
    (face,) = recognizer.predict(astronaut)
    (explained,) = explain_image(bundle, astronaut, options=FaceOptions(tta="flip"))
    assert (explained.label, explained.box, explained.tta) == (face.label, face.box, "flip")
    assert explained.score == pytest.approx(face.probs[face.label], abs=1e-6)
    one_view_only = FaceOptions(tta="none")
    (one_view,) = explain_image(bundle, astronaut, options=one_view_only, target_class=face.label)
    assert one_view.score != pytest.approx(explained.score, abs=1e-6)
    assert explained.heatmap is not None and explained.heatmap.shape == (48, 48)
    assert np.array_equal(one_view.heatmap, explained.heatmap)  # the heatmap is of one view


def test_explain_takes_the_face_options_predict_takes(
    photos: Path, quadrant_run: Path, tmp_path: Path, capsys
) -> None:
    photo = photos / "grace_hopper.jpg"
    image = load_image(photo)

    def explain(*flags: str) -> tuple[str, tuple[int, int] | None]:
        """What `ferlab explain` prints with ``flags``, and the size of its face-crop picture."""
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        main(["explain", str(photo), "--model", str(quadrant_run), "--out", str(out), *flags])
        crops = list(out.glob("grace_hopper_face1_*.png"))
        if not crops:
            return capsys.readouterr().out, None
        with Image.open(crops[0]) as overlay:
            return capsys.readouterr().out, overlay.size

    def square(box: tuple[int, int, int, int], margin: float = 0.0) -> tuple[int, int]:
        crop = square_crop(image, box, margin)
        return crop.shape[1], crop.shape[0]

    (face,) = detect_faces(image)
    (coarse,) = detect_faces(image, max_side=64)
    assert explain()[1] == square(face.box)
    assert explain("--margin", "0.25")[1] == square(face.box, 0.25) != square(face.box)
    assert explain("--detect-side", "64")[1] == square(coarse.box) != square(face.box)
    assert explain("--min-score", "0.95") == (f"{photo}  no face found\n", None)
    assert explain("--min-face", "300")[1] is None
    assert "probabilities with shift TTA" in explain("--tta", "shift")[0]
    assert "probabilities without TTA" in explain("--no-tta")[0]


def test_explain_whole_images_and_failures(
    quadrant_tree: Path, quadrant_run: Path, tmp_path: Path, capsys
) -> None:
    crop = quadrant_tree / "test" / "down" / "000.png"
    args = ["explain", str(crop), "--model", str(quadrant_run), "--no-detect"]
    assert main([*args, "--target-class", "across", "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / "000_face1_across.png") as overlay:
        assert overlay.size == (48, 48)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    capsys.readouterr()
    assert main(["explain", str(bad), "--model", str(quadrant_run), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("ferlab: error:") == 1
    assert main([*args, "--target-class", "angry"]) == 2
