"""``ferlab train``: flags generated from TrainConfig; --config FILE.yaml underneath."""

from __future__ import annotations

import argparse
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from ferlab.config import CHOICES, TRANSFER_STRATEGIES, TrainConfig, config_fields
from ferlab.errors import ConfigError
from ferlab.progress import add_quiet_option

FLAG_HELP = {
    "data": "data set: a class-folder tree, the FER2013 CSV or a path,label manifest CSV",
    "labels": "a CSV of per-class votes or probabilities per image (file column relative to "
    "--data), e.g. FER+'s ferplus.csv; the splits still come from --data",
    "label_mode": "with --labels: distribution (cross-entropy against the normalised votes) | "
    "majority (one-hot of the majority, ties to the first column)",
    "model": "registry name (see 'ferlab models')",
    "strategy": "frozen | finetune | progressive; a Lightning strategy such as ddp goes to "
    "--distributed (the flag may be given twice: --strategy progressive --strategy ddp)",
    "pretrained": "use the model's pretrained weights (ImageNet's; faces for face_resnet29)",
    "weights": "a local weights file instead of downloading",
    "keep": "classes to keep, e.g. angry,happy,sad (6-class: all but disgust)",
    "rename": "rename classes, e.g. anger=angry,sadness=sad",
    "merge": "merge classes, e.g. negative=angry+disgust+fear;positive=happy",
    "limit_per_class": "use at most N training images per class (quick experiments)",
    "limit": "use N training images in all, a stratified seeded sample (quick experiments)",
    "va_loss": "multitask head: loss for valence and arousal (ccc: 1 - concordance)",
    "valence_weight": "multitask head: weight of the valence loss beside cross-entropy",
    "arousal_weight": "multitask head: weight of the arousal loss beside cross-entropy",
    "image_size": "square size images are decoded and cached at",
    "input_size": "model input size (default: the model's)",
    "balance": "sampler: weighted sampling; loss: class-weighted loss",
    "devices": "devices per node: a count, a list like 0,1, or auto",
    "distributed": "Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...",
    "max_steps_per_epoch": "cap the training batches per epoch",
    "max_val_batches": "cap the validation batches per epoch",
    "augment": "augmentation preset (light: flips and shifts; strong: wider ranges)",
    "scheduler": "learning-rate schedule",
    "num_workers": "data loader processes (default: half the CPUs, 1 to 4)",
    "cache_dir": "folder of decoded images (default: $FERLAB_CACHE or ~/.cache/ferlab)",
    "head": "linear | mlp | multitask (expression + valence and arousal)",
    "backbone_lr_factor": "backbone LR = lr x this",
    "mixup": "mixup's alpha: each training image and its target blended with another's of the "
    "batch, weight drawn from Beta(alpha, alpha); 0: off",
    "stage_lr_decay": "progressive: each deeper stage's LR = the one above x this",
    "unfreeze_every": "progressive: epochs between unfreezing stages",
    "unfreeze_stages": "progressive: how many stages, from the top, get unfrozen",
    "precision": "auto (16-mixed on CUDA, else 32-true), bf16-mixed, ...",
    "color": "how images are decoded",
    "on_bad_file": "what to do with unreadable images",
    "patience": "early stopping: epochs without a better val accuracy (0: off)",
    "runs_dir": "where run folders are made",
    "name": "run folder name (default: MODEL-STRATEGY, numbered if taken)",
}


METAVARS = {
    "data": "PATH",
    "labels": "VOTES.csv",
    "model": "NAME",
    "weights": "FILE",
    "head": "NAME",
    "keep": "CLASSES",
    "rename": "OLD=NEW,...",
    "merge": "NEW=A+B;...",
    "cache_dir": "DIR",
    "runs_dir": "DIR",
    "name": "NAME",
    "devices": "DEVICES",
    "precision": "NAME",
    "accelerator": "NAME",
    "distributed": "NAME",
}
_TYPE_METAVARS = {bool: "{true,false}", int: "N", float: "NUM"}


def _base_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _flag_help(name: str, default: Any) -> str:
    """The flag's help, ending in its default unless there is none or the text tells it."""
    text = FLAG_HELP.get(name, "")
    if default is None or default == "" or "(default:" in text:
        return text
    default = str(default).lower() if isinstance(default, bool) else default
    return f"{text} (default: {default})" if text else f"default: {default}"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model by transfer learning",
        description="Train a model. Flags override the values of --config FILE.yaml.",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file with training options"
    )
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    defaults = TrainConfig()
    for name, annotation in config_fields().items():
        flag = "--" + name.replace("_", "-")
        help_text = _flag_help(name, getattr(defaults, name))
        if name == "strategy":
            parser.add_argument(flag, action="append", metavar="NAME", help=help_text)
            continue
        base = _base_type(annotation)
        parser.add_argument(
            flag,
            type=str if base is bool else base,
            choices=CHOICES.get(name),
            default=None,
            metavar=None if name in CHOICES else METAVARS.get(name, _TYPE_METAVARS.get(base)),
            help=help_text,
        )
    add_quiet_option(parser)
    parser.set_defaults(handler=_run_train)


def _split_strategies(values: list[str] | None) -> dict[str, str]:
    """``--strategy`` values as the transfer strategy and the Lightning (distributed) one; an
    unknown name is a ConfigError with the closest known one suggested."""
    out: dict[str, str] = {}
    for value in values or []:
        if value not in TRANSFER_STRATEGIES:
            _check_lightning_strategy(value)
        out["strategy" if value in TRANSFER_STRATEGIES else "distributed"] = value
    return out


def _warn_if_photos(data: str) -> None:
    """Warn once when the training images look like photos rather than face crops."""
    from ferlab.inference.crop_faces import not_face_crops_warning

    message = not_face_crops_warning(data)
    if message:
        warnings.warn(message, UserWarning, stacklevel=2)


def _check_lightning_strategy(name: str) -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    from ferlab.suggest import did_you_mean

    lightning = ["auto", *StrategyRegistry.available_strategies()]
    if name not in lightning:
        hint = did_you_mean(name, [*TRANSFER_STRATEGIES, *lightning])
        raise ConfigError(
            f"--strategy: unknown strategy '{name}'{hint} (transfer: "
            f"{', '.join(TRANSFER_STRATEGIES)}; or a Lightning strategy such as ddp)"
        )


UNUSED_BY_STRATEGY = {
    "frozen": ("backbone_lr_factor", "stage_lr_decay", "unfreeze_every", "unfreeze_stages"),
    "finetune": ("stage_lr_decay", "unfreeze_every", "unfreeze_stages"),
}
"""The options a transfer strategy does not read (``progressive`` reads them all)."""


def _warn_unused_by_strategy(strategy: str, given: list[str]) -> None:
    unused = [name for name in given if name in UNUSED_BY_STRATEGY.get(strategy, ())]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        warnings.warn(f"{flags}: no effect with --strategy {strategy}", stacklevel=2)


def _run_train(args: argparse.Namespace) -> int:
    from ferlab.config import load_config
    from ferlab.training.run import train

    values = {name: getattr(args, name) for name in config_fields() if name != "strategy"}
    values.update(_split_strategies(args.strategy))
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError(
                f"--resume reads {args.resume}/config.yaml; --config {args.config} is for a new run"
            )
        overrides = {k: v for k, v in values.items() if v is not None}
        result = train(resume=args.resume, **overrides)
    else:
        config = load_config(args.config, **values)
        _warn_if_photos(config.data)
        _warn_unused_by_strategy(config.strategy, [k for k, v in values.items() if v is not None])
        result = train(config)
    best = "n/a" if result.best_val_acc is None else f"{result.best_val_acc:.4f}"
    print(f"run: {result.run_dir}")
    print(f"epochs: {result.epochs_completed}  best val accuracy: {best}")
    row = result.best_epoch or {}
    if row.get("val_score"):
        values = {d: row.get(f"val_ccc_{d}") for d in ("valence", "arousal")}
        ccc = "  ".join(f"{d} {float(v):.4f}" if v else f"{d} n/a" for d, v in values.items())
        print(f"val CCC at that epoch: {ccc}")
    print(f"model file: {result.model_file}")
    return 0
