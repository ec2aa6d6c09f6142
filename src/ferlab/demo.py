"""``make demo``: the shipped model on a bundled public-domain photo, through the public API.

    python -m ferlab.demo [IMAGE] [--out FILE]

Finds the faces, prints each one's box and most probable expressions, and writes the annotated
image (default: ``demo-output/<image>-annotated.jpg``).
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from ferlab.errors import FerlabError

DEMO_PHOTO = "astronaut.jpg"


def bundled_photo() -> Path:
    """The public-domain photo that ships with ferlab (NASA's portrait of Eileen Collins)."""
    return Path(str(resources.files("ferlab") / "assets" / DEMO_PHOTO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ferlab.demo",
        description="The shipped model on a bundled public-domain photo (or IMAGE): prints each "
        "face's box and most probable expressions and writes the annotated image (default: "
        "demo-output/<image>-annotated.jpg).",
    )
    parser.add_argument("image", nargs="?", type=Path, default=None, help="default: bundled photo")
    parser.add_argument("--out", type=Path, help="annotated image to write")
    args = parser.parse_args(argv)
    from ferlab.inference.annotate import write_annotated
    from ferlab.inference.image_results import ImageResult
    from ferlab.inference.images import load_image
    from ferlab.inference.recognizer import Recognizer

    image_path = args.image or bundled_photo()
    out = args.out or Path("demo-output") / f"{image_path.stem}-annotated.jpg"
    try:
        started = time.perf_counter()
        recognizer = Recognizer.load("default")
        image = load_image(image_path, rgb=True)
        result = ImageResult.of(str(image_path), image, recognizer.predict(image, rgb=True))
        elapsed = time.perf_counter() - started
        written = write_annotated(out, result.annotate(image))
    except FerlabError as exc:
        print(f"ferlab demo: error: {exc}", file=sys.stderr)
        return 2
    classifier = recognizer.classifier
    print(f"model: {classifier.name} on {classifier.runtime}, {elapsed:.2f} s in all")
    print(f"{image_path}: {len(result.faces)} face(s)")
    for line in result.lines():
        print(line)
    print(f"wrote {written}")
    print(f"from the command line: ferlab predict {image_path} --annotate {out.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
