"""Inference speed: classifier faces/s and latency on FER2013 test crops, torch vs ONNX vs int8,
and end-to-end frames/s (detection included) on 640x480 frames with one face, at the model's
test-time augmentation and then with each mode; Markdown tables.

    python scripts/bench_predict.py [--model default] [--data ../shared/data/fer2013]
        [--photos ../shared/data/photos] [--threads 2] [--frames 40] [--detect-sides 480,640,320]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from ferlab.inference.batch import find_images
from ferlab.inference.detect import detect_faces
from ferlab.inference.images import load_image
from ferlab.inference.onnx_export import export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.recognizer import Recognizer
from ferlab.inference.runner import ModelRunner
from ferlab.inference.runtime import load_model
from ferlab.tta_modes import TTA_MODES

SINGLE_RUNS = 200  # batch-1 calls timed per backend
CALIBRATION = 512  # FER2013 train crops for static int8


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


def make_frames(photos: Path, count: int) -> list[np.ndarray]:
    """640x480 gray-background frames with the astronaut's face pasted at varying places."""
    astronaut = load_image(photos / "astronaut.png", rgb=True)
    x1, y1, x2, y2 = detect_faces(astronaut)[0].box
    face = astronaut[max(0, y1 - 40) : y2 + 40, max(0, x1 - 40) : x2 + 40]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        frame = np.full((480, 640, 3), 110, np.uint8)
        top, left = rng.integers(0, 480 - face.shape[0]), rng.integers(0, 640 - face.shape[1])
        frame[top : top + face.shape[0], left : left + face.shape[1]] = face
        frames.append(frame)
    return frames


def time_detection(frames: list[np.ndarray], side: int) -> np.ndarray:
    cycle = itertools.cycle(frames)
    return timed(lambda: detect_faces(next(cycle), max_side=side), len(frames))


def bench_frames(name: str, recognizer: Recognizer, frames: list[np.ndarray]) -> str:
    found = [len(recognizer.predict(f, rgb=True)) for f in frames]
    cycle = itertools.cycle(frames)
    ms = timed(lambda: recognizer.predict(next(cycle), rgb=True), len(frames))
    side = recognizer.options.detect_side
    return (
        f"| {name} | {side} px | {1000 / ms.mean():.1f} | {np.median(ms):.1f} "
        f"| {np.percentile(ms, 95):.1f} | {sum(found)}/{len(frames)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="run folder or model file")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/photos"))
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--frames", type=int, default=40, help="640x480 frames timed per backend")
    parser.add_argument(
        "--detect-sides",
        default="480,640,320",
        help="longer sides frames are shrunk to for detection, compared on ONNX fp32",
    )
    args = parser.parse_args()
    if not (args.data / "test").is_dir():
        sys.exit(f"skipped: FER2013 not found at {args.data} (needs test/ and train/ folders)")
    if not (args.photos / "astronaut.png").is_file():
        sys.exit(f"skipped: {args.photos / 'astronaut.png'} not found")
    torch.set_num_threads(args.threads)
    torch_model = load_model(args.model, "torch")
    model_file = torch_model.source
    x, y = load_crops(args.data, "test", torch_model)
    train_files, _ = find_images([str(args.data / "train")])
    calibration = spread([f.path for f in train_files], CALIBRATION)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model_file, Path(tmp) / "fp32.onnx")
        dynamic = export_onnx(model_file, Path(tmp) / "dynamic.onnx", "int8")
        static = export_onnx(model_file, Path(tmp) / "static.onnx", "int8", calibration=calibration)
        every_conv = export_onnx(
            model_file, Path(tmp) / "all.onnx", "int8", calibration=calibration, float_convs=0
        )
        static_model = OnnxModel(static, threads=args.threads)
        meta = static_model.session.get_modelmeta().custom_metadata_map
        float_convs = json.loads(meta["int8"])["float_convs"]
        backends: list[tuple[str, ModelRunner, Path]] = [
            ("torch fp32", torch_model, model_file),
            ("ONNX fp32", OnnxModel(fp32, threads=args.threads), fp32),
            ("ONNX int8 dynamic", OnnxModel(dynamic, threads=args.threads), dynamic),
            (f"ONNX int8 static QDQ, first {float_convs} convs float", static_model, static),
            (
                "ONNX int8 static QDQ, every conv int8",
                OnnxModel(every_conv, threads=args.threads),
                every_conv,
            ),
        ]
        print(
            f"{model_file} ({torch_model.name}, {torch_model.prep.input_size} px), "
            f"{platform.processor() or platform.machine()}, {args.threads} threads, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}\n"
        )
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
        for name, model, path in backends:
            size = path.stat().st_size / 1e6
            print(bench_classifier(name, model, size, x, y, reference.argmax(1)), flush=True)
        frames = make_frames(args.photos, args.frames)
        print(
            f"\nEnd to end, 640x480 frames with one face ({args.frames} frames, detection "
            "included):\n"
        )
        print("| backend | detection at | frames/s | p50 ms | p95 ms | faces found |")
        print("|---|---|---|---|---|---|")
        sides = [int(side) for side in args.detect_sides.split(",")]
        for side in sides:
            detection = time_detection(frames, side)
            print(
                f"| detection alone | {side} px | {1000 / detection.mean():.1f} "
                f"| {np.median(detection):.1f} | {np.percentile(detection, 95):.1f} | |"
            )
        for name, model, _ in backends:
            print(bench_frames(name, Recognizer(model, detect_side=sides[0]), frames), flush=True)
        for side in sides[1:]:
            recognizer = Recognizer(backends[1][1], detect_side=side)
            print(bench_frames(backends[1][0], recognizer, frames), flush=True)
        for mode in TTA_MODES:
            recognizer = Recognizer(backends[1][1], detect_side=sides[0], tta=mode)
            print(bench_frames(f"{backends[1][0]}, {mode} TTA", recognizer, frames), flush=True)


if __name__ == "__main__":
    main()
