"""Write the inputs that the README's examples use, besides FER2013, into the current folder.

    python scripts/readme_inputs.py [--shared ../shared/data] [--clip /tmp/readme/clip.mp4]

- ``photos/``: the two public-domain portraits, both side by side as ``pair.jpg`` (Grace Hopper's
  scaled to 512 px tall) and a text file named ``notes.jpg``;
- ``my-photos/neutral/pair.jpg``: a labelled photo with two faces, for ``data crop-faces``;
- ``synthetic-affectnet/``: the tests' AffectNet-layout set (``tests/affectnet_fixture.py``);
- ``hopper.avi``: 3 frames of Grace Hopper's portrait as MJPG at 10 fps, the last one black;
- the clip: 5 s at 10 fps of FER2013 PrivateTest faces pasted into 640x480 frames, a happy face
  moving right for 2 s, 1 s without a face, then a surprised and a neutral face side by side.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from affectnet_fixture import make_synthetic_affectnet  # noqa: E402

PORTRAITS = ("astronaut.png", "grace_hopper.jpg")
CLIP_FACES = (  # FER2013 test crops: the moving face, then the left and right one of the pair
    "happy/PrivateTest_10513598.png",
    "surprise/PrivateTest_10089743.png",
    "neutral/PrivateTest_11239107.png",
)
FPS = 10.0


def write_photos(shared: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in PORTRAITS:
        shutil.copyfile(shared / "photos" / name, out / name)
    astronaut = Image.open(out / PORTRAITS[0]).convert("RGB")
    hopper = Image.open(out / PORTRAITS[1]).convert("RGB")
    hopper = hopper.resize((round(hopper.width * 512 / hopper.height), 512), Image.LANCZOS)
    pair = Image.new("RGB", (astronaut.width + hopper.width, 512), "white")
    pair.paste(astronaut, (0, 0))
    pair.paste(hopper, (astronaut.width, 0))
    pair.save(out / "pair.jpg", quality=95)
    (out / "notes.jpg").write_text("not a photo: meeting notes\n")


def _face(path: Path) -> np.ndarray:
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    face = cv2.resize(gray, (160, 160), interpolation=cv2.INTER_CUBIC)
    return np.repeat(face[:, :, None], 3, axis=2)


def clip_frames(fer2013: Path) -> Iterator[np.ndarray]:
    moving, left, right = (_face(fer2013 / "test" / name) for name in CLIP_FACES)
    for index in range(50):
        frame = np.full((480, 640, 3), 128, np.uint8)
        if index < 20:
            x = 100 + 3 * index
            frame[150:310, x : x + 160] = moving
        elif index >= 30:
            step = index - 30
            frame[160:320, 60 + 2 * step : 220 + 2 * step] = left
            frame[140:300, 400 - 2 * step : 560 - 2 * step] = right
        yield frame


def write_clip(fer2013: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (640, 480))
    for frame in clip_frames(fer2013):
        writer.write(frame)
    writer.release()


def write_hopper_clip(photo: Path, path: Path) -> None:
    frame = cv2.imread(str(photo))
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (width, height))
    for picture in (frame, frame, np.zeros_like(frame)):
        writer.write(picture)
    writer.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path("../shared/data"),
        help="the folder holding photos/ and fer2013/ (default: ../shared/data)",
    )
    parser.add_argument("--clip", type=Path, default=Path("/tmp/readme/clip.mp4"))
    args = parser.parse_args()
    needed = [args.shared / "photos" / name for name in PORTRAITS]
    needed += [args.shared / "fer2013" / "test" / name for name in CLIP_FACES]
    missing = [path for path in needed if not path.is_file()]
    if missing:
        parser.error(
            f"{missing[0]}: not found; give --shared DIR, the folder holding photos/ and fer2013/"
        )
    write_photos(args.shared, Path("photos"))
    (Path("my-photos") / "neutral").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path("photos") / "pair.jpg", Path("my-photos") / "neutral" / "pair.jpg")
    shutil.rmtree("synthetic-affectnet", ignore_errors=True)
    make_synthetic_affectnet(Path("synthetic-affectnet"))
    write_hopper_clip(Path("photos") / PORTRAITS[1], Path("hopper.avi"))
    write_clip(args.shared / "fer2013", args.clip)
    print(f"wrote photos/, my-photos/, synthetic-affectnet/, hopper.avi and {args.clip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
