"""Start-up time of the ``ferlab`` command and of the web service module.

Each case runs in a fresh interpreter; the median wall time over the runs is printed, and the
median CPU time (user + system) of the child, which a background job sharing the CPU does not
inflate as it does the wall time; the load average at the start says how busy the machine was.

    python scripts/bench_cli.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_seconds(command: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``command`` over ``runs`` runs."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _children_cpu()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh runs per case (default: 5)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"median of {args.runs} fresh runs; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start"
    )
    print(f"{'':<26} {'wall':>6}  {'CPU':>6}")
    for name, command in cases().items():
        wall, cpu = median_seconds(command, args.runs)
        print(f"{name:<26} {wall:>5.2f}s  {cpu:>5.2f}s")


if __name__ == "__main__":
    main()
