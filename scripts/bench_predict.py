"""Inference speed, Markdown tables: the classifier alone on FER2013 test crops (torch, ONNX,
int8); end to end on real-content frames (the shared photos letterboxed to 640x480 and 1280x720,
a group of faces on a photo; the old synthetic gray frame as an extra row), detection and
classification timed apart; face detectors' speed and recall side by side (libfacedetection at
several working sizes); video frames/s with detection every 1, 3, 5 frames.

    python scripts/bench_predict.py [--model default] [--data ../shared/data/fer2013]
        [--photos ../shared/data/photos] [--skimage-data DIR] [--threads 2] [--frames 40]
        [--video-frames 120] [--detect-sides 480,640,320] [--no-classifier]

scikit-image's data (its LFW face/non-face crops and coffee photo) is read from the installed
package (pip install scikit-image) or --skimage-data.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch

from ferlab.inference.batch import find_images
from ferlab.inference.detect import Face, detect_faces, libfacedetection
from ferlab.inference.images import load_image
from ferlab.inference.onnx_export import export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.recognizer import Recognizer
from ferlab.inference.runner import ModelRunner
from ferlab.inference.runtime import load_model
from ferlab.tta_modes import TTA_MODES

SINGLE_RUNS = 200  # batch-1 calls timed per backend
CALIBRATION = 512  # FER2013 train crops for static int8
PASTED_SIDES = (24, 32, 48, 64, 96, 128, 200)  # face widths pasted for the recall table
DETECTOR_SIDES = (320, 400, 480, 640)  # libfacedetection's working sizes compared


def timed(call: Callable[[], object], runs: int) -> np.ndarray:
    """Milliseconds per call, after two warm-up calls."""
    call(), call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return np.array(times)


def spread(files: list[Path], count: int) -> list[Path]:
    return files[:: max(1, len(files) // count)][:count]


def load_crops(data: Path, split: str, classifier: ModelRunner) -> tuple[np.ndarray, np.ndarray]:
    files, _ = find_images([str(data / split)])
    spec = classifier.spec
    crops = [spec.crop_tensor(load_image(f.path)) for f in files]
    labels = np.array([classifier.classes.index(f.path.parent.name) for f in files])
    return spec.model_input(crops), labels


def bench_classifier(
    name: str, model: ModelRunner, size_mb: float, x: np.ndarray, y: np.ndarray, top1: np.ndarray
) -> str:
    """One table row; ``top1``: the PyTorch model's classes, for the agreement column."""
    single = timed(lambda: model(x[:1]), SINGLE_RUNS)
    batches = [x[i : i + 64] for i in range(0, len(x) - 63, 64)]
    cycle = itertools.cycle(batches)
    batched = timed(lambda: model(next(cycle)), len(batches))
    probs = np.concatenate([model(x[i : i + 256]) for i in range(0, len(x), 256)])
    accuracy = float((probs.argmax(1) == y).mean())
    agreement = float((probs.argmax(1) == top1).mean())
    return (
        f"| {name} | {size_mb:.1f} | {accuracy:.4f} | {agreement:.4f} | {np.median(single):.2f} "
        f"| {np.percentile(single, 95):.2f} | {1000 / single.mean():.0f} "
        f"| {np.median(batched):.1f} | {np.percentile(batched, 95):.1f} "
        f"| {64000 / batched.mean():.0f} |"
    )


def letterboxed(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` scaled to fit ``width`` x ``height``, centred on black bars."""
    scale = min(width / image.shape[1], height / image.shape[0])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    inner = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    frame = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    frame[top : top + size[1], left : left + size[0]] = inner
    return frame


@dataclass
class Portrait:
    """A face from a photo with context around it: ``image`` (RGB) and the face box in it."""

    image: np.ndarray
    box: tuple[int, int, int, int]

    def pasted(self, frame: np.ndarray, side: int, x: int, y: int) -> tuple[int, int, int, int]:
        """Paste this face into ``frame`` with its box ``side`` px wide at (x, y); its box there."""
        x1, y1, x2, y2 = self.box
        scale = side / (x2 - x1)
        height, width = self.image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        patch = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
        left, top = x - round(x1 * scale), y - round(y1 * scale)
        cut = patch[max(0, -top) :, max(0, -left) :]
        top, left = max(0, top), max(0, left)
        h = min(cut.shape[0], frame.shape[0] - top)
        w = min(cut.shape[1], frame.shape[1] - left)
        frame[top : top + h, left : left + w] = cut[:h, :w]
        return (x, y, x + side, y + round((y2 - y1) * scale))

    def mirrored(self) -> Portrait:
        x1, y1, x2, y2 = self.box
        width = self.image.shape[1]
        return Portrait(np.ascontiguousarray(self.image[:, ::-1]), (width - x2, y1, width - x1, y2))


def portraits(photos: list[np.ndarray], context: float = 0.3) -> list[Portrait]:
    """Each photo's first face with ``context`` x its box side around it."""
    found = []
    for photo in photos:
        x1, y1, x2, y2 = detect_faces(photo, max_side=max(photo.shape[:2]))[0].box
        pad = round(context * (x2 - x1))
        left, top = max(0, x1 - pad), max(0, y1 - pad)
        image = photo[top : y2 + pad, left : x2 + pad]
        found.append(Portrait(image, (x1 - left, y1 - top, x2 - left, y2 - top)))
    return found


@dataclass
class FrameSet:
    """Frames to time, named for the tables, with the number of faces each holds."""

    name: str
    frames: list[np.ndarray]
    faces: int


def frame_sets(
    photos: list[np.ndarray], background: np.ndarray, faces: list[Portrait]
) -> list[FrameSet]:
    """The photos letterboxed to 640x480 and 1280x720, a group of four faces on a photo
    background, and the synthetic frame: one face pasted into a flat gray canvas."""
    group = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    x = 20
    for index, side in enumerate((110, 85, 65, 45)):
        face = faces[index % len(faces)]
        face = face.mirrored() if index >= len(faces) else face
        face.pasted(group, side, x, 150 + 20 * index)
        x += round(side * 1.6) + 20
    gray = np.full((480, 640, 3), 110, np.uint8)
    faces[0].pasted(gray, 120, 260, 180)
    return [
        FrameSet(
            f"{len(photos)} photos letterboxed to 640x480",
            [letterboxed(photo, 640, 480) for photo in photos],
            1,
        ),
        FrameSet(
            f"{len(photos)} photos letterboxed to 1280x720",
            [letterboxed(photo, 1280, 720) for photo in photos],
            1,
        ),
        FrameSet("group of 4 faces (45-110 px) on a photo, 640x480", [group], 4),
        FrameSet("synthetic: one face on a flat gray 640x480 canvas (extra)", [gray], 1),
    ]


def cycled(frames: list[np.ndarray], count: int) -> list[np.ndarray]:
    return list(itertools.islice(itertools.cycle(frames), count))


def bench_frames(
    name: str, recognizer: Recognizer, frames: FrameSet, count: int
) -> tuple[str, float, float]:
    """One row: detection alone, classification of the faces found, and both (frames/s, p95);
    with the median detection ms and the frames/s."""
    images = cycled(frames.frames, count)
    found = [recognizer.find_faces(image) for image in images]
    cycle = itertools.cycle(range(count))
    detection = timed(lambda: recognizer.find_faces(images[next(cycle)]), count)
    classify = timed(
        lambda: recognizer.predict_faces([images[i := next(cycle)]], [found[i]]), count
    )
    total = timed(lambda: recognizer.predict(images[next(cycle)], rgb=True), count)
    faces = sum(len(faces) for faces in found)
    side = recognizer.options.detect_side
    row = (
        f"| {frames.name} | {name} | {side} px | {np.median(detection):.1f} "
        f"| {np.median(classify):.1f} | {np.median(total):.1f} | {np.percentile(total, 95):.1f} "
        f"| **{1000 / total.mean():.1f}** | {faces}/{frames.faces * count} |"
    )
    print(row, flush=True)
    return row, float(np.median(detection)), 1000 / float(total.mean())


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union else 0.0


def pasted_faces(background: np.ndarray, faces: list[Portrait]) -> dict[int, list]:
    """Per face side, 640x480 photo-background frames with one pasted face each and its box:
    each face and its mirror image at 3 places."""
    base = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    sets: dict[int, list] = {}
    for side in PASTED_SIDES:
        sets[side] = []
        for face in [*faces, *(face.mirrored() for face in faces)]:
            for fx, fy in ((0.1, 0.15), (0.45, 0.3), (0.7, 0.55)):
                frame = base.copy()
                x, y = round(fx * (640 - side)), round(fy * (480 - side * 1.3))
                sets[side].append((frame, face.pasted(frame, side, x, y)))
    return sets


def lfw_crops(skimage_data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """scikit-image's LFW subset, 100 face and 100 non-face 25x25 crops, at 100 px, RGB."""
    crops = np.load(skimage_data / "lfw_subset.npy")
    images = [
        np.repeat(
            cv2.resize(
                np.round(crop * 255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC
            )[:, :, None],
            3,
            axis=2,
        )
        for crop in crops
    ]
    return images[:100], images[100:]


def bench_detector(
    name: str,
    detect: Callable[[np.ndarray], list[Face]],
    real: FrameSet,
    photos: list[np.ndarray],
    pasted: dict[int, list],
    lfw: tuple[list[np.ndarray], list[np.ndarray]],
    count: int,
) -> str:
    """One row of the recall table: speed on real 640x480 frames, faces found in the photos
    (and extra boxes), in pasted faces per size (IoU >= 0.3), and in the LFW crops."""
    images = cycled(real.frames, count)
    cycle = itertools.cycle(images)
    ms = timed(lambda: detect(next(cycle)), count)
    in_photos = [detect(photo) for photo in photos]
    found = sum(min(1, len(faces)) for faces in in_photos)
    extra = sum(max(0, len(faces) - 1) for faces in in_photos)
    cells = []
    for side in PASTED_SIDES:
        hits = sum(
            any(iou(face.box, box) >= 0.3 for face in detect(frame)) for frame, box in pasted[side]
        )
        cells.append(f"{hits}/{len(pasted[side])}")
    lfw_cells = [f"{sum(bool(detect(crop)) for crop in crops)}/{len(crops)}" for crops in lfw]
    return (
        f"| {name} | {np.median(ms):.1f} | {np.percentile(ms, 95):.1f} "
        f"| {found}/{len(photos)} (+{extra}) | {' | '.join(cells)} | {' | '.join(lfw_cells)} |"
    )


def video_clip(background: np.ndarray, faces: list[Portrait], count: int) -> list[np.ndarray]:
    """``count`` BGR 640x480 frames: two faces crossing a photo background, the one 3 px a frame
    to the right, the other 2 px a frame to the left and bobbing."""
    base = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    frames = []
    for index in range(count):
        frame = base.copy()
        faces[0].pasted(frame, 100, 30 + 3 * index % 480, 120)
        faces[-1].mirrored().pasted(
            frame, 80, 520 - 2 * index % 480, 260 + round(20 * np.sin(index / 6))
        )
        frames.append(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return frames


def bench_video(recognizer: Recognizer, frames: list[np.ndarray], every: int) -> float:
    """Print one row of the video table; the frames/s."""
    list(recognizer.stream(frames[:10], every=every))  # warm-up
    start = time.perf_counter()
    results = list(recognizer.stream(frames, every=every))
    seconds = time.perf_counter() - start
    detected = sum(result.detected for result in results)
    tracks = {tracked.track for result in results for tracked in result.faces}
    faces = sum(len(result.faces) for result in results)
    print(
        f"| {every} | {len(frames) / seconds:.1f} | {detected}/{len(frames)} | {len(tracks)} "
        f"| {faces}/{2 * len(frames)} |",
        flush=True,
    )
    return len(frames) / seconds


def skimage_data_dir() -> Path | None:
    """scikit-image's bundled data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="run folder or model file")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/photos"))
    parser.add_argument(
        "--skimage-data",
        type=Path,
        default=skimage_data_dir(),
        help="scikit-image's data folder (lfw_subset.npy, coffee.png; default: the installed "
        "scikit-image's)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--frames", type=int, default=40, help="frames timed per row")
    parser.add_argument("--video-frames", type=int, default=120, help="frames of the video clip")
    parser.add_argument(
        "--detect-sides",
        default="480,640,320",
        help="longer sides frames are shrunk to for detection, compared on ONNX fp32",
    )
    parser.add_argument(
        "--no-classifier", action="store_true", help="skip the classifier-only table"
    )
    args = parser.parse_args()
    if not (args.data / "test").is_dir():
        sys.exit(f"skipped: FER2013 not found at {args.data} (needs test/ and train/ folders)")
    photo_files = sorted(args.photos.glob("*.[jp][pn]g"))
    if not photo_files:
        sys.exit(f"skipped: no .jpg or .png photos in {args.photos}")
    if args.skimage_data is None or not (args.skimage_data / "lfw_subset.npy").is_file():
        sys.exit(
            "skipped: scikit-image's data not found (pip install scikit-image, or give "
            "--skimage-data DIR with lfw_subset.npy and coffee.png)"
        )
    torch.set_num_threads(args.threads)
    torch_model = load_model(args.model, "torch")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(torch_model.source, Path(tmp) / "fp32.onnx")
        backends: list[tuple[str, ModelRunner, Path]] = [
            ("torch fp32", torch_model, torch_model.source),
            ("ONNX fp32", OnnxModel(fp32, threads=args.threads), fp32),
        ]
        print(
            f"{torch_model.source} ({torch_model.name}, {torch_model.prep.input_size} px), "
            f"{platform.processor() or platform.machine()}, {args.threads} threads, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}\n"
        )
        if not args.no_classifier:
            backends += classifier_table(args, backends, Path(tmp))
        frames_tables(args, backends, photo_files)


def classifier_table(
    args: argparse.Namespace, backends: list[tuple[str, ModelRunner, Path]], tmp: Path
) -> list[tuple[str, ModelRunner, Path]]:
    """Print the classifier-only table of ``backends`` and the int8 exports; those exports."""
    torch_model = backends[0][1]
    model_file = backends[0][2]
    x, y = load_crops(args.data, "test", torch_model)
    train_files, _ = find_images([str(args.data / "train")])
    calibration = spread([f.path for f in train_files], CALIBRATION)
    dynamic = export_onnx(model_file, tmp / "dynamic.onnx", "int8")
    static = export_onnx(model_file, tmp / "static.onnx", "int8", calibration=calibration)
    every_conv = export_onnx(
        model_file, tmp / "all.onnx", "int8", calibration=calibration, float_convs=0
    )
    static_model = OnnxModel(static, threads=args.threads)
    meta = static_model.session.get_modelmeta().custom_metadata_map
    float_convs = json.loads(meta["int8"])["float_convs"]
    int8: list[tuple[str, ModelRunner, Path]] = [
        ("ONNX int8 dynamic", OnnxModel(dynamic, threads=args.threads), dynamic),
        (f"ONNX int8 static QDQ, first {float_convs} convs float", static_model, static),
        (
            "ONNX int8 static QDQ, every conv int8",
            OnnxModel(every_conv, threads=args.threads),
            every_conv,
        ),
    ]
    print(
        f"Classifier only, {len(x)} FER2013 test crops (accuracy over all of them; int8 "
        f"static calibrated on {len(calibration)} train crops):\n"
    )
    print(
        "| backend | file MB | test acc | top-1 = torch | b1 p50 ms | b1 p95 ms | b1 faces/s "
        "| b64 p50 ms | b64 p95 ms | b64 faces/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = np.concatenate([torch_model(x[i : i + 256]) for i in range(0, len(x), 256)])
    for name, model, path in [*backends, *int8]:
        size = path.stat().st_size / 1e6
        print(bench_classifier(name, model, size, x, y, reference.argmax(1)), flush=True)
    return int8


def frames_tables(
    args: argparse.Namespace, backends: list[tuple[str, ModelRunner, Path]], photo_files: list
) -> None:
    """Print the end-to-end, face detector and video tables."""
    photos = [load_image(path) for path in photo_files]
    background = load_image(args.skimage_data / "coffee.png")
    faces = portraits(photos)
    sets = frame_sets(photos, background, faces)
    real = sets[0]
    sides = [int(side) for side in args.detect_sides.split(",")]
    count = args.frames
    names = ", ".join(path.name for path in photo_files)
    print(
        f"\nEnd to end (detection, crop, classification), {count} frames a row cycling through "
        f"the set: the photos ({names}) letterboxed to 640x480 and to 1280x720; a group of 4 "
        f"faces cut from them, pasted 45-110 px wide on scikit-image's coffee photo; and, as an "
        f"extra row, the synthetic frame of earlier versions (one face on a flat gray canvas). "
        f"Detection and classification are timed alone, then together; TTA as the model file "
        f"says unless the row says otherwise:\n"
    )
    print(
        "| frames | backend | detection at | detect p50 ms | classify p50 ms | total p50 ms "
        "| total p95 ms | frames/s | faces found |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    onnx_name, onnx = backends[1][0], backends[1][1]
    measured = {}
    for name, model, _ in backends:
        measured[name] = bench_frames(name, Recognizer(model, detect_side=sides[0]), real, count)
    for side in sides[1:]:
        bench_frames(onnx_name, Recognizer(onnx, detect_side=side), real, count)
    for mode in TTA_MODES:
        recognizer = Recognizer(onnx, detect_side=sides[0], tta=mode)
        bench_frames(f"{onnx_name}, {mode} TTA", recognizer, real, count)
    for frames in sets[1:]:
        bench_frames(onnx_name, Recognizer(onnx, detect_side=sides[0]), frames, count)
    detector_table(args, real, photos, background, faces)
    video = video_table(args, onnx, background, faces, sides[0])
    _, detection_ms, frames_s = measured[onnx_name]
    tta = Recognizer(onnx).tta
    print(
        f"\nTargets, on the real 640x480 frames, ONNX fp32, detection at {sides[0]} px:\n\n"
        f"- detection p50 {detection_ms:.1f} ms (target <= 15): {_verdict(detection_ms <= 15)}\n"
        f"- end to end, one face, {tta} TTA: {frames_s:.1f} frames/s (target >= 40): "
        f"{_verdict(frames_s >= 40)}\n"
        f"- video, detection every 3rd frame: {video[3]:.1f} frames/s (target >= 100): "
        f"{_verdict(video[3] >= 100)}"
    )


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def detector_table(
    args: argparse.Namespace,
    real: FrameSet,
    photos: list[np.ndarray],
    background: np.ndarray,
    faces: list[Portrait],
) -> None:
    """Print the speed and recall of libfacedetection at each working size."""
    pasted = pasted_faces(background, faces)
    lfw = lfw_crops(args.skimage_data)
    print(
        f"\nFace detectors: time on the real 640x480 frames ({args.frames} calls); faces found "
        f"in the {len(photos)} photos at full size (+ extra boxes); pasted faces found (IoU >= "
        f"0.3), by face width, {len(pasted[PASTED_SIDES[0]])} per width (each face and its "
        f"mirror image at 3 places on the coffee photo, 640x480); scikit-image's LFW crops (25 "
        f"px, shown at 100 px) with a face found, of the 100 faces and of the 100 non-faces. "
        f"Scores >= 0.6 and faces >= 24 px, as ferlab keeps them:\n"
    )
    widths = " | ".join(f"{width} px" for width in PASTED_SIDES)
    print(f"| detector | p50 ms | p95 ms | photos | {widths} | LFW faces | LFW non-faces |")
    print(f"|---|---|---|---|{'---|' * len(PASTED_SIDES)}---|---|")
    for side in DETECTOR_SIDES:

        def detect(image: np.ndarray, side: int = side) -> list[Face]:
            return detect_faces(image, max_side=side, detector=libfacedetection)

        row = bench_detector(
            f"libfacedetection at {side} px", detect, real, photos, pasted, lfw, args.frames
        )
        print(row, flush=True)


def video_table(
    args: argparse.Namespace,
    classifier: ModelRunner,
    background: np.ndarray,
    faces: list[Portrait],
    side: int,
) -> dict[int, float]:
    """Print frames/s of ``Recognizer.stream`` with detection every 1, 3 and 5 frames; those."""
    clip = video_clip(background, faces, args.video_frames)
    print(
        f"\nVideo: `Recognizer.stream` over a {len(clip)}-frame 640x480 clip in memory (two "
        f"faces, 100 and 80 px wide, crossing the coffee photo at 3 and 2 px a frame), ONNX "
        f"fp32, detection at {side} px, TTA as the model file says, smoothing 0.5 s; detection "
        f"every N frames at most, the tracked boxes classified on the frames between:\n"
    )
    print("| every N | frames/s | frames detected | tracks | faces shown |")
    print("|---|---|---|---|---|")
    return {
        every: bench_video(Recognizer(classifier, detect_side=side), clip, every)
        for every in (1, 3, 5)
    }


if __name__ == "__main__":
    main()
