"""Render the annotation examples under docs/ with the shipped model: a group photo (the faces of
the two demo photos pasted at several sizes on a light-to-dark canvas, some close together) and a
video frame with track ids.

    python scripts/render_annotations.py [--photos ../shared/data/photos] [--out docs]

tests/test_annotate.py builds the same pictures and checks their label panels.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ferlab.inference import Recognizer
from ferlab.inference.annotate import annotate
from ferlab.inference.detect import detect_faces, square_crop
from ferlab.inference.images import load_image

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared/data/photos"
SIZE = (960, 540)  # width, height
GROUP = [  # photo, side, left, top of each pasted face crop
    ("astronaut.png", 200, 20, 40),
    ("grace_hopper.jpg", 150, 228, 70),
    ("astronaut.png", 120, 400, 30),
    ("grace_hopper.jpg", 120, 400, 160),
    ("grace_hopper.jpg", 220, 560, 120),
    ("astronaut.png", 130, 800, 20),
    ("grace_hopper.jpg", 140, 170, 380),
    ("astronaut.png", 120, 820, 400),
]
VIDEO_FRAMES = 10


def face_crops(photos: Path) -> dict[str, np.ndarray]:
    """Each demo photo's face, square, with some hair and background around it (RGB)."""
    crops = {}
    for name in ("astronaut.png", "grace_hopper.jpg"):
        image = load_image(photos / name, rgb=True)
        [face] = detect_faces(image, max_side=max(image.shape))
        crops[name] = square_crop(image, face.box, margin=0.3)
    return crops


def canvas() -> np.ndarray:
    """An RGB background that goes from light gray on the left to dark gray on the right."""
    ramp = np.linspace(235, 35, SIZE[0]).astype(np.uint8)
    return np.repeat(np.tile(ramp, (SIZE[1], 1))[:, :, None], 3, axis=2)


def paste(image: np.ndarray, crop: np.ndarray, side: int, left: int, top: int) -> None:
    image[top : top + side, left : left + side] = cv2.resize(
        crop, (side, side), interpolation=cv2.INTER_AREA
    )


def group_photo(photos: Path) -> np.ndarray:
    """The ``GROUP`` faces on the canvas (RGB)."""
    crops = face_crops(photos)
    image = canvas()
    for name, side, left, top in GROUP:
        paste(image, crops[name], side, left, top)
    return image


def video_frames(photos: Path) -> Iterator[np.ndarray]:
    """Two faces walking towards each other across the canvas (BGR frames)."""
    crops = face_crops(photos)
    for index in range(VIDEO_FRAMES):
        image = canvas()
        paste(image, crops["astronaut.png"], 160, 120 + 20 * index, 180)
        paste(image, crops["grace_hopper.jpg"], 180, 660 - 20 * index, 140)
        yield np.ascontiguousarray(image[:, :, ::-1])


def write_small_png(path: Path, image_bgr: np.ndarray) -> None:
    """``image_bgr`` as a PNG of 256 colours (a third of the size of a full-colour one)."""
    rgb = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    recognizer = Recognizer.load()
    args.out.mkdir(parents=True, exist_ok=True)
    group = group_photo(args.photos)
    faces = recognizer.predict(group, rgb=True)
    write_small_png(args.out / "group-annotation.png", annotate(group, faces))
    *_, last = recognizer.stream(video_frames(args.photos), fps=10.0)
    write_small_png(args.out / "video-annotation.png", last.annotate())
    for name in ("group-annotation.png", "video-annotation.png"):
        path = args.out / name
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
