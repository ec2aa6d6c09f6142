"""Start-up time of the ``ferlab`` command and of the web service module.

Each case runs in a fresh interpreter; the median wall time over the runs is printed, with the
load average, since a background job sharing the CPU slows every case alike.

    python scripts/bench_cli.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _ferlab() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``python -m ferlab``."""
    script = shutil.which("ferlab", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "ferlab"]


def cases() -> dict[str, list[str]]:
    ferlab = _ferlab()
    return {
        "ferlab --version": [*ferlab, "--version"],
        "ferlab --help": [*ferlab, "--help"],
        "ferlab predict --help": [*ferlab, "predict", "--help"],
        "import ferlab.apps.server": [sys.executable, "-c", "import ferlab.apps.server"],
    }


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh runs per case (default: 5)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"median of {args.runs} fresh runs; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start"
    )
    for name, command in cases().items():
        print(f"{name:<26} {median_seconds(command, args.runs):.2f} s")


if __name__ == "__main__":
    main()
