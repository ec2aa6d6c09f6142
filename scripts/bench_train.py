"""Training throughput on FER2013: images/s and the share of step time spent waiting for data.

Runs short real trainings through ``ferlab.train`` (the same loader, transforms and Lightning loop
as any run) and reads the figures its EpochRecorder logs for the second epoch, after warm-up.

    python scripts/bench_train.py [--data ../shared/data/fer2013] [--steps 60] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from ferlab import train
from ferlab.run_folder import RunFolder

CASES = [
    {"model": "baseline_cnn", "input_size": 48, "pretrained": False},
    {"model": "mobilenet_v2", "input_size": 96, "pretrained": True},
]


def bench(data: Path, case: dict, steps: int, batch_size: int, runs: Path) -> dict:
    result = train(
        data=str(data),
        epochs=2,
        batch_size=batch_size,
        max_steps_per_epoch=steps,
        max_val_batches=1,
        patience=0,
        runs_dir=str(runs),
        **case,
    )
    second = RunFolder(result.run_dir).metrics_rows()[-1]
    images_per_s = float(second["images_per_s"])
    return {
        **case,
        "batch_size": batch_size,
        "steps": steps,
        "images_per_s": round(images_per_s, 1),
        "step_ms": round(1000 * batch_size / images_per_s, 1),
        "data_wait_frac": float(second["data_wait_frac"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    parser.add_argument("--steps", type=int, default=60, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        rows = [bench(args.data, case, args.steps, args.batch_size, Path(runs)) for case in CASES]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {machine}")
    print("| model | input | batch | images/s | step (ms) | waiting for data |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['input_size']} px | {row['batch_size']} | "
            f"{row['images_per_s']} | {row['step_ms']} | {100 * row['data_wait_frac']:.1f}% |"
        )
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
