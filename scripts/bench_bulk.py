"""Bulk prediction speed: images/s of the local engine and of Ray with 1 and 2 workers; Markdown.

Each engine reads, decodes, detects and classifies the same list of photos (the given files,
repeated up to --images), end to end; Ray's times include starting its actor pool, the rate
after the first result leaves it out.

    python scripts/bench_bulk.py [--model default] [--images 400] [--workers 1,2]
        [--ray-address ADDR] [PHOTO ...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

from ferlab.inference.batch import FileOutcome, ImageFile, predict_files
from ferlab.inference.ray_engine import connect, ray_outcomes
from ferlab.inference.recognizer import Recognizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = [
    REPO / "src" / "ferlab" / "assets" / "astronaut.jpg",
    *sorted((REPO.parent / "shared" / "data" / "photos").glob("*")),
]  # the bundled photo and, where they are, the two test portraits


def row(engine: str, workers: str, outcomes: Iterator[FileOutcome]) -> str:
    """A table row: the time to drain ``outcomes``, images/s over all of it and after the first
    outcome (the steady rate, without the start-up), and the faces found."""
    start = time.perf_counter()
    first = next(outcomes)
    after_first = time.perf_counter()
    count, faces = 1, len(first.result.faces if first.result else [])
    for outcome in outcomes:
        count, faces = count + 1, faces + len(outcome.result.faces if outcome.result else [])
    end = time.perf_counter()
    steady = (count - 1) / (end - after_first)
    return (
        f"| {engine} | {workers} | {end - start:.1f} | {count / (end - start):.1f} "
        f"| {after_first - start:.1f} | {steady:.1f} | {faces} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated")
    parser.add_argument("--ray-address", help="a running Ray cluster (default: a local Ray)")
    args = parser.parse_args()

    names = itertools.islice(itertools.cycle(args.photos), args.images)
    files = [ImageFile(path, Path(path.name)) for path in names]
    options = {"ref": args.model}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"{len(files)} images ({len(args.photos)} photos repeated), {args.model}, {machine}")
    print()
    print("| engine | workers | seconds | images/s | s to first | images/s after | faces |")
    print("|---|---|---|---|---|---|---|")
    recognizer = Recognizer.load(**options)
    local = predict_files(recognizer, files, batch_size=args.batch_size)
    print(row("local", "1 process", local), flush=True)
    ray = connect(args.ray_address)
    try:
        for workers in (int(n) for n in args.workers.split(",")):
            outcomes = ray_outcomes(files, options, batch_size=args.batch_size, workers=workers)
            print(row("ray", str(workers), outcomes), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
