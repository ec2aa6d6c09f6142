"""Compact copies of a run, small enough to commit, that ``ferlab train --resume`` continues.

A Lightning checkpoint of an AdamW run holds the weights and two moment tensors per weight. The
compact copy keeps weights and everything else as they are and stores the moments in bfloat16
(torch casts optimizer state back to the parameters' dtype on load), which cuts the file to about
half. Resuming from it continues the same schedule, epoch and lineage; only the moments carry
bfloat16 rounding.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

RUN_FILES = ("config.yaml", "classes.json", "metrics.csv", "run.json")


def _compact_state(state: Any) -> Any:
    if isinstance(state, torch.Tensor) and state.is_floating_point() and state.dim() > 0:
        return state.to(torch.bfloat16)
    if isinstance(state, dict):
        return {key: _compact_state(value) for key, value in state.items()}
    return state


def compact_checkpoint(source: Path, target: Path) -> None:
    """Write ``source`` to ``target`` with optimizer moments in bfloat16 (atomically)."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    for optimizer in checkpoint.get("optimizer_states", []):
        optimizer["state"] = {k: _compact_state(v) for k, v in optimizer["state"].items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    torch.save(checkpoint, partial)
    os.replace(partial, target)


def weights_only_checkpoint(source: Path, target: Path) -> None:
    """Keep only ``state_dict`` of a checkpoint: what exporting the model file needs."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    torch.save({"state_dict": checkpoint["state_dict"], "epoch": checkpoint["epoch"]}, partial)
    os.replace(partial, target)


def snapshot_run(run_dir: Path, target: Path) -> list[Path]:
    """Copy a run's records and compact checkpoints to ``target``; returns the files written."""
    written = []
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
            written.append(target / name)
    checkpoints = run_dir / "checkpoints"
    compact_checkpoint(checkpoints / "last.ckpt", target / "checkpoints" / "last.ckpt")
    written.append(target / "checkpoints" / "last.ckpt")
    if (checkpoints / "best.ckpt").is_file():
        weights_only_checkpoint(checkpoints / "best.ckpt", target / "checkpoints" / "best.ckpt")
        written.append(target / "checkpoints" / "best.ckpt")
    return written
