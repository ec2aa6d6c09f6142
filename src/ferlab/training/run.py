"""``ferlab.train``: one call from a TrainConfig to a finished run folder
(:mod:`ferlab.run_folder` tells what it holds)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ferlab.config import TrainConfig, load_config, parse_devices
from ferlab.data.classes import ClassMapping, parse_class_options
from ferlab.data.datamodule import FERDataModule
from ferlab.data.soft_labels import attach_votes, read_vote_table
from ferlab.data.sources import DatasetSource, load_dataset
from ferlab.errors import ConfigError, DataError, DivergedError, FerlabError, ModelError
from ferlab.models.artifact import ModelBundle, save_model_file
from ferlab.models.registry import FERModel, check_input_size, create_model, model_info
from ferlab.models.spec import SPEC_TRAINING_OPTIONS, ModelSpec
from ferlab.outputs import check_outside_data, check_writable
from ferlab.preprocessing import Preprocessing
from ferlab.run_folder import BEST, CSV_LOGS, LAST, TENSORBOARD_LOGS, RunFolder
from ferlab.signals import Stopped
from ferlab.training.checkpoint import RESUME_KEYS, RunCheckpoint, read_checkpoint
from ferlab.training.console import LIGHTNING_LINES, TrainingConsole, data_summary
from ferlab.training.finetuning import StagedUnfreeze
from ferlab.training.module import FERClassifier
from ferlab.training.monitor import VA_COLUMNS, EpochRecorder
from ferlab.training.reseeding import SeedEachBatch
from ferlab.training.stopping import StopAtBatchBoundary

RUN_DIR_ENV = "FERLAB_RUN_DIR"


class _DropAdvertising(logging.Filter):
    """Lightning logs a tip about a cloud logger and its hardware banner on every run; keep the
    console to the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and not message.startswith(LIGHTNING_LINES)


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropAdvertising())
# Lightning's own use of a torch API it has not caught up with; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# A resumed run's checkpoint folder holds its checkpoints, as it should.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


@dataclass
class TrainResult:
    """What a finished training session left behind."""

    run_dir: Path
    model_file: Path
    best_val_acc: float | None
    epochs_completed: int
    history: list[dict[str, str]]
    best_epoch: dict[str, str] | None = None
    """The metrics.csv row of the epoch model.pt comes from (None if it cannot be told)."""
    data_note: str | None = None
    """What reading the data excluded or skipped, in one line (None if nothing)."""


@dataclass
class PreparedRun:
    config: TrainConfig
    source: DatasetSource
    mapping: ClassMapping
    prep: Preprocessing
    model: FERModel
    datamodule: FERDataModule
    cached: dict[str, bool]
    """Per split, whether its decoded pixels came from the cache."""


def prepare(config: TrainConfig) -> PreparedRun:
    """Check data, classes and weights and decode the data before any file of the run is written."""
    config.validate()
    info = model_info(config.model)
    keep, rename, merge = parse_class_options(config.keep, config.rename, config.merge)
    source = load_dataset(
        config.data,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        on_bad_file=config.on_bad_file,
    )
    if config.labels:
        if config.head == "multitask":
            raise ConfigError("labels: crowd labels train expressions only, not head multitask")
        source, _ = attach_votes(source, read_vote_table(config.labels))
    try:
        mapping = ClassMapping.build(source.classes, keep=keep, rename=rename, merge=merge)
    except ConfigError as exc:
        raise ConfigError(f"{config.data}: {exc}") from None
    prep = Preprocessing(
        input_size=config.input_size or info.input_size,
        in_channels=info.in_channels,
        mean=info.mean,
        std=info.std,
    )
    pretrained: bool | str = config.weights or (
        config.pretrained and info.pretrained_weights is not None
    )
    if config.strategy != "finetune" and not pretrained:
        warnings.warn(
            f"strategy '{config.strategy}' keeps the backbone of {config.model} frozen at first, "
            "but it has no pretrained weights: its random features are what the head learns on",
            stacklevel=2,
        )
    model = create_model(
        config.model,
        mapping.num_classes,
        pretrained=pretrained,
        head=config.head,
        dropout=config.dropout,
    )
    check_input_size(model, prep.input_size, prep.in_channels)
    datamodule = FERDataModule(
        source,
        mapping,
        prep,
        image_size=config.image_size,
        color=config.color,
        augment=config.augment,
        batch_size=config.batch_size,
        balance=config.balance,
        per_class=config.limit_per_class,
        limit=config.limit,
        with_va=model.va,
        label_mode=config.label_mode if config.labels else "majority",
        on_bad_file=config.on_bad_file,
        num_workers=config.num_workers,
        cache_dir=Path(config.cache_dir) if config.cache_dir else None,
        seed=config.seed,
    )
    cached = datamodule.cached_splits()
    datamodule.setup()
    return PreparedRun(config, source, mapping, prep, model, datamodule, cached)


def _class_weights(datamodule: FERDataModule, num_classes: int) -> torch.Tensor:
    counts = datamodule.class_counts().clamp(min=1).float()
    return counts.sum() / (num_classes * counts)


def _precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    return "16-mixed" if torch.cuda.is_available() and config.accelerator != "cpu" else "32-true"


def _is_launched_child() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 and RUN_DIR_ENV in os.environ


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a model; with ``resume=RUN_DIR``, continue that run from its last checkpoint.

    ``overrides`` replace config fields (for a resumed run, fields of its saved config).
    """
    resumed: dict[str, Any] | None = None
    if resume is not None:
        run = RunFolder(Path(resume))
        if run.path.is_file():
            raise ConfigError(f"{run.path}: a file; --resume takes the run folder that holds it")
        if not run.path.is_dir():
            raise ConfigError(f"{run.path}: no such run folder")
        if not run.is_run():
            raise ConfigError(f"{run.path}: not a ferlab run folder (no {run.config.name})")
        saved = load_config(run.config)
        config = load_config(run.config, **overrides)
        _check_resume_changes(run, saved, config, overrides)
        if config.scheduler == "onecycle" and config.epochs != saved.epochs:
            raise ConfigError(
                f"{run.path}: the one-cycle schedule was laid out for its epochs; "
                "resume with the same --epochs (or train a new run)"
            )
        summary = run.read_summary()
        done = summary.get("epochs_completed")
        if run.model_file.is_file() and summary.get("stopped_early"):
            raise ConfigError(
                f"{run.path}: already finished: early stopping ended it after {done} epochs "
                f"(--patience {saved.patience}); nothing to resume"
            )
        if run.model_file.is_file() and isinstance(done, int) and done >= config.epochs:
            more = (
                "train a new run to train longer (its one-cycle schedule was laid out for them)"
                if config.scheduler == "onecycle"
                else "a larger --epochs trains on"
            )
            raise ConfigError(
                f"{run.path}: already finished ({done} of {config.epochs} epochs); nothing to "
                f"resume ({more})"
            )
        resumed = _read_resume_state(run)
        if not Path(config.data).expanduser().exists():
            raise DataError(
                f"{config.data}: no such file or folder; {run.path} trained on it: resume with "
                "--data PATH where it is now"
            )
    elif config is None:
        config = load_config(**overrides)
    elif overrides:
        config = load_config(None, **{**config.to_dict(), **overrides})

    config.validate()
    if resume is None:
        model_info(config.model)  # an unknown model is the first thing to say
        check_outside_data(Path(config.runs_dir), config.data)
    check_writable(run.path if resume is not None else config.runs_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    prepared = prepare(config)
    if resume is None:
        run = _new_run(config)
    return _fit(prepared, run, resumed)


RESUME_CHANGES = (
    "data",
    "epochs",
    "num_workers",
    "cache_dir",
    "accelerator",
    "devices",
    "num_nodes",
    "distributed",
    "precision",
    "channels_last",
)
"""The settings a resumed run may change: where its data and cache are now, its number of epochs
and the hardware it runs on. Others would make it another run (a new --seed draws other held-out
splits from data without fixed ones, so that it would be tested on images it trained on)."""


def _check_resume_changes(
    run: RunFolder, saved: TrainConfig, config: TrainConfig, given: dict[str, Any]
) -> None:
    """ConfigError for a setting given to a resume that differs from the run's own and is not one
    of ``RESUME_CHANGES``."""
    changed = [
        name
        for name in given
        if name not in RESUME_CHANGES and getattr(config, name) != getattr(saved, name)
    ]
    if changed:
        what = ", ".join(
            f"--{name.replace('_', '-')} {getattr(config, name)} (the run's: "
            f"{getattr(saved, name)})"
            for name in changed
        )
        allowed = ", ".join("--" + name.replace("_", "-") for name in RESUME_CHANGES)
        raise ConfigError(
            f"{run.path}: a resumed run keeps its settings, so {what} would make another run; "
            f"train a new one for that (a resume may change {allowed})"
        )


def _new_run(config: TrainConfig) -> RunFolder:
    """A new run's folder; a process launched for a distributed run takes its launcher's."""
    if _is_launched_child():
        return RunFolder(Path(os.environ[RUN_DIR_ENV]))
    run = RunFolder.new(config.runs_dir, config.name or f"{config.model}-{config.strategy}")
    if config.name and run.path.name != config.name:
        warnings.warn(
            f"{Path(config.runs_dir) / config.name} is an earlier run; this one is {run.path}",
            stacklevel=2,
        )
    return run


def _read_resume_state(run: RunFolder) -> dict[str, Any]:
    """The run's last checkpoint, read weights-only; its best one is checked the same way now,
    before any work, rather than when the model file is exported at the end."""
    last = run.checkpoint(LAST)
    if not last.is_file():
        raise ConfigError(f"{run.path}: nothing to resume (no {run.relative(last)})")
    state = read_checkpoint(last, RESUME_KEYS)
    if run.checkpoint(BEST).is_file():
        read_checkpoint(run.checkpoint(BEST))
    return state


def _check_resumable(module: FERClassifier, state: dict[str, Any], run: RunFolder) -> None:
    """Refuse, before anything is written, a checkpoint the configured model or optimizer do not
    fit (a resume given a different --model, --head, --strategy or class options)."""
    where = run.checkpoint(LAST)
    if not all(isinstance(value, torch.Tensor) for value in state["state_dict"].values()):
        raise ModelError(f"{where}: malformed state_dict in the checkpoint (not all tensors)")
    have = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    saved = {key: tuple(value.shape) for key, value in state["state_dict"].items()}
    differ = sorted(key for key in have.keys() | saved.keys() if have.get(key) != saved.get(key))
    if differ:
        raise ConfigError(
            f"{where}: does not fit the model as now configured ({len(differ)} tensors differ, "
            f"e.g. {differ[0]}); resume with the run's own model and class options"
        )
    groups = [len(group["params"]) for group in module.param_groups()]
    try:
        saved_groups = [len(g["params"]) for g in state["optimizer_states"][0]["param_groups"]]
    except (KeyError, IndexError, TypeError):
        raise ModelError(f"{where}: malformed optimizer state in the checkpoint") from None
    if groups != saved_groups:
        raise ConfigError(
            f"{where}: its optimizer has parameter groups of {saved_groups}, the configured one "
            f"{groups}; resume with the run's own --strategy"
        )


def _module(prepared: PreparedRun) -> FERClassifier:
    config = prepared.config
    num_classes = prepared.mapping.num_classes
    class_weights = (
        _class_weights(prepared.datamodule, num_classes) if config.balance == "loss" else None
    )
    return FERClassifier(
        prepared.model,
        num_classes,
        lr=config.lr,
        backbone_lr_factor=config.backbone_lr_factor,
        stage_lr_decay=config.stage_lr_decay,
        weight_decay=config.weight_decay,
        scheduler=config.scheduler,
        label_smoothing=config.label_smoothing,
        mixup=config.mixup,
        class_weights=class_weights,
        progressive=config.strategy == "progressive",
        channels_last=config.channels_last,
        va_loss=config.va_loss,
        valence_weight=config.valence_weight,
        arousal_weight=config.arousal_weight,
    )


def _callbacks(
    prepared: PreparedRun,
    run: RunFolder,
    first: list[L.Callback],
    best: RunCheckpoint,
) -> list[L.Callback]:
    """``first``, then what trains, records and checkpoints each epoch, in the order Lightning
    calls them."""
    config = prepared.config
    stages_top_first = list(reversed(prepared.model.info.stages))
    callbacks: list[L.Callback] = [
        *first,
        SeedEachBatch(config.seed),
        StagedUnfreeze(
            config.strategy, stages_top_first, config.unfreeze_every, config.unfreeze_stages
        ),
        EpochRecorder(run, VA_COLUMNS if prepared.model.va else ()),
        best,
        # Lightning writes save_last only in epochs that improved the best; resuming needs every
        # epoch.
        RunCheckpoint(run.checkpoint(LAST)),
        TrainingConsole(),
    ]
    if config.patience > 0:
        callbacks.append(EarlyStopping(monitor=best.monitor, mode="max", patience=config.patience))
    return callbacks


def _trainer(
    prepared: PreparedRun, run: RunFolder, session: int, callbacks: list[L.Callback]
) -> L.Trainer:
    """A Trainer that logs session ``session`` of ``run``."""
    config = prepared.config
    train_batches = len(prepared.datamodule.splits["train"].labels) // config.batch_size
    version = f"session{session}"
    return L.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=parse_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.distributed,
        precision=_precision(config),
        gradient_clip_val=config.grad_clip or None,
        callbacks=callbacks,
        logger=[
            CSVLogger(run.path, name=CSV_LOGS, version=version),
            TensorBoardLogger(run.path, name=TENSORBOARD_LOGS, version=version),
        ],
        limit_train_batches=config.max_steps_per_epoch,
        limit_val_batches=config.max_val_batches,
        default_root_dir=run.path,
        log_every_n_steps=max(1, min(10, train_batches)),
        enable_model_summary=False,
        enable_progress_bar=False,  # TrainingConsole draws ferlab's own
        enable_autolog_hparams=False,  # it would write log files before a resume is restored
    )


def _fit(prepared: PreparedRun, run: RunFolder, resumed: dict[str, Any] | None) -> TrainResult:
    module = _module(prepared)
    best = RunCheckpoint(run.checkpoint(BEST), "val_score" if prepared.model.va else "val_acc")
    stop = StopAtBatchBoundary()
    sessions = run.sessions()
    session_start = _SessionStart(lambda: _start_session(prepared, run, resumed, sessions))
    callbacks = _callbacks(prepared, run, [session_start, stop], best)
    trainer = _trainer(prepared, run, len(sessions), callbacks)
    last_ckpt = None
    if resumed is not None:
        _check_resumable(module, resumed, run)
        last_ckpt = run.checkpoint(LAST)
        prepared.datamodule.first_epoch = int(resumed["epoch"]) + 1
    if not _is_launched_child():
        print(data_summary(prepared), flush=True)
    os.environ[RUN_DIR_ENV] = str(run.path)
    started = time.perf_counter()
    with stop, _workers_ended_on_failure():
        try:
            trainer.fit(
                module, datamodule=prepared.datamodule, ckpt_path=last_ckpt, weights_only=True
            )
        except (Stopped, SystemExit):  # Lightning ends a fit on SIGTERM with a SystemExit
            if stop.signum is None:
                raise
            raise Stopped(stop.signum, _resume_hint(run)) from None
        except DivergedError as exc:
            raise DivergedError(
                f"{exc}; nothing was exported (try a lower --lr, or --precision 32-true); "
                f"{_resume_hint(run)}"
            ) from None
        except (MemoryError, RuntimeError) as exc:
            # A loader worker that the signal reached while starting dies of it.
            if stop.signum is not None:
                raise Stopped(stop.signum, _resume_hint(run)) from None
            if not _out_of_memory(exc):
                raise
            raise ConfigError(
                f"out of memory while training {prepared.config.model} at batch "
                f"{prepared.config.batch_size}, input {prepared.prep.input_size} px; try a "
                f"smaller --batch-size or --input-size; {_resume_hint(run)}"
            ) from None
        finally:
            os.environ.pop(RUN_DIR_ENV, None)
        if trainer.is_global_zero:
            session_start()  # a resumed run with no epoch left to train did not start one
        return _finish(prepared, run, trainer, best, sessions, started)


@contextmanager
def _workers_ended_on_failure() -> Iterator[None]:
    """Kill the processes the block started (data loader workers, which ignore stop signals) when
    it fails: a fit that ends by an exception, in the sanity check above all, can leave them to
    the interpreter's exit, which would wait on them for ever."""
    before = set(multiprocessing.active_children())
    try:
        yield
    except BaseException:
        started = set(multiprocessing.active_children()) - before
        main_thread = threading.current_thread() is threading.main_thread()
        # PyTorch's SIGCHLD handler would take the workers' end for a crash of theirs.
        handler = signal.signal(signal.SIGCHLD, signal.SIG_DFL) if main_thread else None
        try:
            for child in started:
                child.kill()
                child.join(timeout=10)
        finally:
            if main_thread:
                signal.signal(signal.SIGCHLD, handler)
        raise


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out (host or accelerator)."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _resume_hint(run: RunFolder) -> str:
    if run.checkpoint(LAST).is_file():
        return f"continue with: ferlab train --resume {run.path}"
    return f"no epoch finished, so nothing can be resumed; {run.path} can be removed"


class _SessionStart(L.Callback):
    """Runs ``action`` once, on rank zero, when training starts: after a resumed checkpoint was
    restored, so that a resume that fails leaves the run's files as they were."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.action()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self()


def _finish(
    prepared: PreparedRun,
    run: RunFolder,
    trainer: L.Trainer,
    best: RunCheckpoint,
    sessions: list[dict[str, Any]],
    started: float,
) -> TrainResult:
    # The processes of other nodes chose a folder name of their own (numbered when rank 0 had
    # made its folder first) and wrote nothing there: all report rank 0's.
    run = RunFolder(Path(trainer.strategy.broadcast(str(run.path))))
    epochs_completed = trainer.current_epoch
    monitor = best.monitor
    best_score = float(best.best_model_score) if best.best_model_score is not None else None
    best_epoch = _best_epoch(run.metrics_rows(), monitor, best_score)
    best_val_acc = best_score
    if monitor != "val_acc":
        best_val_acc = float(best_epoch["val_acc"]) if best_epoch else None
    if trainer.is_global_zero:
        _export(prepared, run)
        run.end_session(
            sessions,
            epochs_completed,
            time.perf_counter() - started,
            best_val_acc=best_val_acc,
            stopped_early=epochs_completed < prepared.config.epochs,
        )
    _end_process_group(trainer)
    return TrainResult(
        run.path,
        run.model_file,
        best_val_acc,
        epochs_completed,
        sessions,
        best_epoch=best_epoch,
        data_note=prepared.source.loading_note(),
    )


def _end_process_group(trainer: L.Trainer) -> None:
    """Wait for every process of a distributed run, then end its process group: a process that
    exits with the group alive can abort in the communication library's teardown."""
    if trainer.world_size > 1:
        trainer.strategy.barrier("ferlab-finish")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _best_epoch(
    rows: list[dict[str, str]], monitor: str, best: float | None
) -> dict[str, str] | None:
    """The first row whose ``monitor`` equals the checkpoint's best score (to the 5 decimals
    metrics.csv keeps)."""
    if best is None:
        return None
    for row in rows:
        if row.get(monitor) and abs(float(row[monitor]) - best) <= 1e-5:
            return row
    return None


def _start_session(
    prepared: PreparedRun,
    run: RunFolder,
    resumed: dict[str, Any] | None,
    sessions: list[dict[str, Any]],
) -> None:
    run.write_setup(prepared.config, prepared.mapping.to_dict())
    start: dict[str, Any] = {"resumed_from": None, "start_epoch": 0}
    if resumed is not None:
        start = {
            "resumed_from": run.relative(run.checkpoint(LAST)),
            "start_epoch": int(resumed["epoch"]) + 1,
            "start_step": int(resumed["global_step"]),
        }
    run.start_session(sessions, start, model=prepared.config.model, classes=prepared.mapping.names)


def _export(prepared: PreparedRun, run: RunFolder) -> None:
    """Write the model file from the run folder's own best checkpoint (or its last one if none
    was ranked)."""
    source = run.checkpoint(BEST)
    if not source.is_file():
        source = run.checkpoint(LAST)
    if not source.is_file():
        raise FerlabError(f"{run.path}: training ended without a checkpoint to export")
    state = read_checkpoint(source)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    prepared.model.load_state_dict(weights)
    train_split = prepared.datamodule.splits["train"]
    prior = train_split.class_prior(prepared.mapping.num_classes)
    config = prepared.config.with_absolute_paths()  # the model file is read from anywhere
    spec = ModelSpec(
        name=config.model,
        classes=tuple(prepared.mapping.names),
        prep=prepared.prep,
        head=config.head,
        va=prepared.model.va,
        label_source=config.labels,
        label_mode=config.label_mode if config.labels else "single",
        class_prior=tuple(round(float(p), 6) for p in prior),
        **{key: getattr(config, key) for key in SPEC_TRAINING_OPTIONS},
    )
    meta = {
        "trained_on": str(config.data),
        "strategy": config.strategy,
        "checkpoint": source.name,
        "config": config.to_dict(),
    }
    bundle = ModelBundle(model=prepared.model, spec=spec, meta=meta)
    save_model_file(run.model_file, bundle)
