"""A training run's folder: the one place that knows its files, how a new one is numbered and how
its records are read and written.

    config.yaml          the resolved training config
    classes.json         the class mapping
    metrics.csv          a row per finished epoch
    run.json             summary and the lineage of sessions
    checkpoints/         best.ckpt and last.ckpt
    logs/, tensorboard/  Lightning's CSV and TensorBoard logs, a version per session
    model.pt             the self-contained model file, for evaluation and inference
    eval-<split>/        what ``ferlab evaluate`` writes by default

Nothing recorded inside names the folder itself, so a run folder can be moved or copied.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferlab.outputs import numbered, write_atomic

if TYPE_CHECKING:
    from ferlab.config import TrainConfig

MODEL_FILE = "model.pt"
BEST, LAST = "best", "last"
CHECKPOINT_SUFFIX = ".ckpt"  # Lightning's ModelCheckpoint.FILE_EXTENSION
CSV_LOGS, TENSORBOARD_LOGS = "logs", "tensorboard"


@dataclass
class RunFolder:
    """The run folder at ``path`` (which need not exist yet) and the paths of its files."""

    path: Path
    config: Path = field(init=False, repr=False)
    classes: Path = field(init=False, repr=False)
    metrics: Path = field(init=False, repr=False)
    summary: Path = field(init=False, repr=False)
    model_file: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.config = self.path / "config.yaml"
        self.classes = self.path / "classes.json"
        self.metrics = self.path / "metrics.csv"
        self.summary = self.path / "run.json"
        self.model_file = self.path / MODEL_FILE

    @classmethod
    def new(cls, runs_dir: str | Path, name: str) -> RunFolder:
        """A new run's folder, not made yet: ``runs_dir/name``, else the first free ``name-2``,
        ``name-3``, ..."""
        return cls(numbered(Path(runs_dir) / name))

    @classmethod
    def of_model(cls, model_file: Path) -> RunFolder | None:
        """The run folder ``model_file`` sits in; None for a file outside one (the shipped model,
        a downloaded file)."""
        run = cls(Path(model_file).parent)
        return run if run.is_run() else None

    def is_run(self) -> bool:
        """Whether training has started here (its config is written first)."""
        return self.config.is_file()

    @property
    def records(self) -> list[Path]:
        """The run's own records (config, classes, metrics and summary), present or not."""
        return [self.config, self.classes, self.metrics, self.summary]

    def checkpoint(self, name: str) -> Path:
        """The run's checkpoint ``name`` (``BEST`` or ``LAST``)."""
        return self.path / "checkpoints" / f"{name}{CHECKPOINT_SUFFIX}"

    def eval_dir(self, split: str) -> Path:
        """Where an evaluation of the run's model on ``split`` goes by default."""
        return self.path / f"eval-{split}"

    def relative(self, path: Path) -> str:
        """``path`` inside the folder, as recorded in run.json."""
        return path.relative_to(self.path).as_posix()

    def write_setup(self, config: TrainConfig, classes: dict[str, Any]) -> None:
        """Make the folder and write the config and class mapping a session trains with; the
        config's paths are absolute, so that ``--resume`` works from any folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        config.with_absolute_paths().save(self.config)
        _write_json(self.classes, classes)

    def read_summary(self) -> dict[str, Any]:
        """run.json (empty before the first session)."""
        return json.loads(self.summary.read_text()) if self.summary.is_file() else {}

    def sessions(self) -> list[dict[str, Any]]:
        """The lineage of sessions in run.json, oldest first."""
        return self.read_summary().get("sessions", [])

    def start_session(
        self, sessions: list[dict[str, Any]], start: dict[str, Any], **fields: Any
    ) -> None:
        """Append a session starting now (``start``: where it starts) to ``sessions`` and write
        them, with ``fields``, into run.json."""
        started = datetime.now(timezone.utc).isoformat()
        sessions.append({"session": len(sessions), "started": started, **start})
        self._update_summary(**fields, sessions=sessions)

    def end_session(
        self, sessions: list[dict[str, Any]], end_epoch: int, seconds: float, **fields: Any
    ) -> None:
        """Close the last of ``sessions`` and write them into run.json with the total training
        time, the model file's name, the last metrics row and ``fields``."""
        sessions[-1].update({"end_epoch": end_epoch, "seconds": round(seconds, 1)})
        rows = self.metrics_rows()
        self._update_summary(
            sessions=sessions,
            epochs_completed=end_epoch,
            **fields,
            train_seconds=round(sum(s.get("seconds", 0.0) for s in sessions), 1),
            model_file=MODEL_FILE,
            last_epoch=rows[-1] if rows else None,
        )

    def _update_summary(self, **fields: Any) -> None:
        summary = self.read_summary()
        summary.update(fields)
        _write_json(self.summary, summary)

    def train_seconds(self, model_file: Path) -> float | None:
        """The training time run.json records for ``model_file``; None when it records none for
        that file or cannot be read."""
        try:
            summary = self.read_summary()
        except (OSError, ValueError):
            return None
        if summary.get("model_file") != model_file.name or "train_seconds" not in summary:
            return None
        return float(summary["train_seconds"])

    def metrics_rows(self) -> list[dict[str, str]]:
        """The rows of metrics.csv (empty if the run logged no epoch yet)."""
        if not self.metrics.is_file():
            return []
        with self.metrics.open(newline="") as handle:
            return list(csv.DictReader(handle))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
