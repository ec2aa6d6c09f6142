"""Run checkpoints: read weights-only, saved without paths, and copied compactly.

Every checkpoint is read with ``torch.load(weights_only=True)``: a file that holds anything but
tensors and plain containers is refused, so a shared run folder cannot run code on resume.

A Lightning checkpoint of an AdamW run holds the weights and two moment tensors per weight. The
compact copy keeps weights and everything else as they are and stores the moments in bfloat16
(torch casts optimizer state back to the parameters' dtype on load), which cuts the file to about
half. Resuming from it continues the same schedule, epoch and lineage; only the moments carry
bfloat16 rounding.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ferlab.errors import ModelError
from ferlab.models.artifact import load_weights_only
from ferlab.run_folder import BEST, LAST, RunFolder

RESUME_KEYS = ("epoch", "global_step", "state_dict", "optimizer_states", "loops")


def read_checkpoint(path: Path, keys: Iterable[str] = ("epoch", "state_dict")) -> dict[str, Any]:
    """A checkpoint read weights-only, with ``keys`` present; ModelError (one line) otherwise."""
    state = load_weights_only(path, "checkpoint")
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a Lightning checkpoint (no dictionary of states)")
    missing = [key for key in keys if key not in state]
    if missing:
        raise ModelError(f"{path}: not a complete checkpoint (no {', '.join(missing)})")
    if not isinstance(state["state_dict"], dict) or not isinstance(state["epoch"], int):
        raise ModelError(f"{path}: not a Lightning checkpoint (malformed state_dict or epoch)")
    return state


class RunCheckpoint(ModelCheckpoint):
    """Keeps one file, ``file``, and saves its scores but no path in checkpoints.

    Lightning's own state holds absolute paths, which after a move or copy of the run folder point
    into the old one (and name the file it deletes when a better one is saved); here the paths on
    resume are always this folder's own.
    """

    def __init__(self, file: Path, monitor: str | None = None) -> None:
        super().__init__(
            dirpath=file.parent,
            filename=file.stem,
            monitor=monitor,
            mode="max" if monitor else "min",
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.FILE_EXTENSION = file.suffix

    def _generate_state_key(self, **kwargs: Any) -> str:
        # Lightning's class name in the key: checkpoints written before this class still restore.
        return f"{ModelCheckpoint.__qualname__}{kwargs!r}"

    @property
    def file(self) -> str:
        return os.path.join(str(self.dirpath), f"{self.filename}{self.FILE_EXTENSION}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "kth_value": self.kth_value,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        score = state_dict.get("best_model_score")
        self.best_model_score = score
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.best_model_path = self.file
        if score is not None:
            self.kth_best_model_path = self.file
            self.best_k_models = {self.file: score}


def _compact_state(state: Any) -> Any:
    if isinstance(state, torch.Tensor) and state.is_floating_point() and state.dim() > 0:
        return state.to(torch.bfloat16)
    if isinstance(state, dict):
        return {key: _compact_state(value) for key, value in state.items()}
    return state


def _save(checkpoint: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    torch.save(checkpoint, partial)
    os.replace(partial, target)


def compacted(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with its optimizer moments in bfloat16."""
    optimizers = [
        {**optimizer, "state": {k: _compact_state(v) for k, v in optimizer["state"].items()}}
        for optimizer in checkpoint["optimizer_states"]
    ]
    return {**checkpoint, "optimizer_states": optimizers}


def snapshot_run(run_dir: Path, target: Path) -> list[Path]:
    """Copy a run's records and compact checkpoints to ``target``; returns the files written.

    Both checkpoints are read (weights-only) before anything is written; of ``best.ckpt`` only
    the weights and epoch are kept, which is what exporting the model file needs.
    """
    run, copy = RunFolder(run_dir), RunFolder(target)
    last = read_checkpoint(run.checkpoint(LAST), RESUME_KEYS)
    best = read_checkpoint(run.checkpoint(BEST)) if run.checkpoint(BEST).is_file() else None
    written = []
    target.mkdir(parents=True, exist_ok=True)
    for record, record_copy in zip(run.records, copy.records, strict=True):
        if record.is_file():
            shutil.copy2(record, record_copy)
            written.append(record_copy)
    _save(compacted(last), copy.checkpoint(LAST))
    written.append(copy.checkpoint(LAST))
    if best is not None:
        _save({"state_dict": best["state_dict"], "epoch": best["epoch"]}, copy.checkpoint(BEST))
        written.append(copy.checkpoint(BEST))
    return written
