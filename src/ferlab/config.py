"""The one typed training configuration, filled from a YAML file and/or command-line flags."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferlab.errors import ConfigError

TRANSFER_STRATEGIES = ("frozen", "finetune", "progressive")
SCHEDULERS = ("onecycle", "plateau", "none")
BALANCE_MODES = ("none", "sampler", "loss")
AUGMENT_PRESETS = ("none", "light", "standard", "strong")
COLOR_MODES = ("gray", "rgb")
BAD_FILE_MODES = ("skip", "error")
VA_LOSSES = ("mse", "ccc")
LABEL_MODES = ("majority", "distribution")
MAX_MIXUP = 10.0  # the Beta(α, α) parameter; above a few, every mix is close to half and half
CHOICES = {  # the options that take one of a fixed set of values
    "strategy": TRANSFER_STRATEGIES,
    "scheduler": SCHEDULERS,
    "balance": BALANCE_MODES,
    "augment": AUGMENT_PRESETS,
    "color": COLOR_MODES,
    "on_bad_file": BAD_FILE_MODES,
    "va_loss": VA_LOSSES,
    "label_mode": LABEL_MODES,
    # Lightning's names (Trainer's accelerator and precision), checked before any work starts
    "accelerator": ("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "precision": (
        "auto",
        "32-true",
        "16-mixed",
        "bf16-mixed",
        "16-true",
        "bf16-true",
        "64-true",
        "32",
        "16",
        "bf16",
        "64",
    ),
}


PATH_FIELDS = ("data", "labels", "weights", "cache_dir", "runs_dir")


@dataclass
class TrainConfig:
    """Everything a training run needs; the resolved copy is saved as ``config.yaml`` in the run."""

    data: str = ""
    labels: str | None = None
    label_mode: str = "distribution"
    model: str = "mobilenet_v2"
    strategy: str = "finetune"
    pretrained: bool = True
    weights: str | None = None
    head: str = "linear"
    dropout: float = 0.5

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1
    stage_lr_decay: float = 0.5
    unfreeze_every: int = 2
    unfreeze_stages: int = 2
    weight_decay: float = 0.05
    scheduler: str = "onecycle"
    label_smoothing: float = 0.1
    mixup: float = 0.0
    grad_clip: float = 1.0
    patience: int = 5
    balance: str = "none"
    va_loss: str = "ccc"
    valence_weight: float = 1.0
    arousal_weight: float = 1.0

    augment: str = "standard"
    image_size: int = 48
    input_size: int | None = None
    color: str = "gray"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    keep: str | None = None
    rename: str | None = None
    merge: str | None = None
    limit_per_class: int | None = None
    limit: int | None = None
    on_bad_file: str = "skip"
    num_workers: int | None = None
    cache_dir: str | None = None

    seed: int = 0
    precision: str = "auto"
    channels_last: bool = True
    accelerator: str = "auto"
    devices: str = "1"
    num_nodes: int = 1
    distributed: str = "auto"
    max_steps_per_epoch: int | None = None
    max_val_batches: int | None = None

    runs_dir: str = "runs"
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Check values that a typo could get wrong; raise ConfigError with a one-line message."""
        if not self.data:
            raise ConfigError("no data set given: pass --data PATH (a class-folder tree or a CSV)")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}: '{value}' is not one of {', '.join(allowed)}")
        for name, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{_named(name)} must be a finite number, got {value}")
        parse_devices(self.devices)
        positive = ("epochs", "batch_size", "unfreeze_every", "num_nodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{_named(name)} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr < 10:
            raise ConfigError(f"{_named('lr')} must be in (0, 10), got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(
                f"{_named('label_smoothing')} must be in [0, 1), got {self.label_smoothing}"
            )
        if not 0 <= self.mixup <= MAX_MIXUP:
            raise ConfigError(
                f"{_named('mixup')} must be in [0, {MAX_MIXUP:g}] (0: off), got {self.mixup}"
            )
        if self.mixup and self.head == "multitask":
            raise ConfigError("mixup: not with head multitask (valence and arousal do not mix)")
        optional_positive = ("limit", "limit_per_class", "max_steps_per_epoch", "max_val_batches")
        for name in optional_positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{_named(name)} must be at least 1, got {getattr(self, name)}")
        if self.input_size is not None and not 8 <= self.input_size <= 1024:
            raise ConfigError(f"{_named('input_size')} must be in 8-1024 px, got {self.input_size}")
        if not 8 <= self.image_size <= 1024:
            raise ConfigError(f"{_named('image_size')} must be in 8-1024 px, got {self.image_size}")
        not_negative = (
            "grad_clip",
            "weight_decay",
            "patience",
            "unfreeze_stages",
            "num_workers",
            "valence_weight",
            "arousal_weight",
        )
        for name in not_negative:
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{_named(name)} must be at least 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"{_named('seed')} must be in 0-{2**32 - 1}, got {self.seed}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{_named('dropout')} must be in [0, 1), got {self.dropout}")
        if self.backbone_lr_factor < 0 or self.stage_lr_decay <= 0:
            raise ConfigError(
                "backbone_lr_factor (--backbone-lr-factor) must be at least 0 and "
                "stage_lr_decay (--stage-lr-decay) above 0"
            )
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ConfigError(
                "val_fraction (--val-fraction) must be in (0, 1) and test_fraction "
                "(--test-fraction) in [0, 1)"
            )
        workers = 4 * (os.cpu_count() or 1)
        if self.num_workers is not None and self.num_workers > workers:
            raise ConfigError(
                f"{_named('num_workers')} must be at most {workers} (four per CPU here), "
                f"got {self.num_workers}"
            )
        if self.name is not None and (
            self.name in ("", ".", "..") or Path(self.name).name != self.name
        ):
            raise ConfigError(
                f"{_named('name')} must be a folder name (the run goes in --runs-dir), "
                f"not a path: {self.name!r}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_absolute_paths(self) -> TrainConfig:
        """A copy whose file options are absolute, so that it reads the same from any folder."""
        paths = {
            name: os.path.abspath(value)
            for name in PATH_FIELDS
            if isinstance(value := getattr(self, name), str) and value
        }
        return dataclasses.replace(self, **paths)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _named(field_name: str) -> str:
    """How messages name an option: its config key and its flag, ``lr (--lr)``."""
    return f"{field_name} (--{field_name.replace('_', '-')})"


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML or CLI value to the field's declared type."""
    args = typing.get_args(annotation)
    is_optional = isinstance(annotation, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if is_optional else annotation
    if value is None:
        if is_optional:
            return None
        raise ConfigError(f"{name}: a value is required")
    if typing.get_origin(base) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return value
    if name in CLASS_OPTION_SYNTAX and isinstance(value, list | dict):
        value = _class_option_text(name, value)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if base in (int, float) and isinstance(value, bool):
            raise ValueError  # YAML's true/false are not numbers
        if base is str and isinstance(value, list | dict):
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {base.__name__}, got {value!r}") from None


CLASS_OPTION_SYNTAX = {
    "keep": "a list of classes: [happy, sad]",
    "rename": "a mapping of old: new names: {anger: angry}",
    "merge": "a mapping of new class: its classes: {negative: [angry, sad]}",
}
"""The class options a YAML config may also write as a list or a mapping."""


def _class_option_text(name: str, value: list[Any] | dict[Any, Any]) -> str:
    """A YAML list or mapping of a class option as the command line writes it."""
    plain = (str, int, float)
    items = list(value.values()) if isinstance(value, dict) else value
    if name == "keep" and isinstance(value, list) and all(isinstance(v, plain) for v in items):
        return ",".join(str(v) for v in value)
    if name == "rename" and isinstance(value, dict) and all(isinstance(v, plain) for v in items):
        return ",".join(f"{old}={new}" for old, new in value.items())
    groups = all(isinstance(v, list) and all(isinstance(m, plain) for m in v) for v in items)
    if name == "merge" and isinstance(value, dict) and groups:
        return ";".join(f"{new}={'+'.join(map(str, v))}" for new, v in value.items())
    raise ConfigError(f"{name}: expected {CLASS_OPTION_SYNTAX[name]} (or a string), got {value!r}")


def parse_devices(value: str) -> int | str | list[int]:
    """``devices`` as Lightning's Trainer takes it: a count of at least 1 (-1: all), a list of
    device indices like ``0,1`` (``0,`` for device 0 alone), or ``auto``; else ConfigError."""
    text = value.strip()
    if text == "auto":
        return text
    if re.fullmatch(r"-1|[1-9]\d*", text):
        return int(text)
    if re.fullmatch(r"\d+(,\d+)*,?", text) and "," in text:
        return [int(part) for part in text.split(",") if part]
    raise ConfigError(
        f"devices: expected a count of at least 1, a list like 0,1, or auto; got '{value}'"
    )


def config_fields() -> dict[str, Any]:
    """Field name → declared type, for building command-line flags."""
    return {k: v for k, v in _field_types().items() if k != "extra"}


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Build a TrainConfig from a YAML file (optional) with ``overrides`` on top (None = unset)."""
    types_by_name = _field_types()

    def typed(values: dict[str, Any], where: str) -> dict[str, Any]:
        unknown = sorted(set(values) - set(types_by_name))
        if unknown:
            raise ConfigError(f"{where}unknown option(s) {', '.join(unknown)}")
        try:
            return {k: _coerce(k, v, types_by_name[k]) for k, v in values.items()}
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None

    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: config file not found")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{file}: not a UTF-8 text file (byte {exc.start}); save the config as UTF-8"
            ) from None
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise ConfigError(f"{file}: not valid YAML{where}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of option: value")
        values.update(typed(loaded, f"{file}: "))
    values.update(typed({k: v for k, v in overrides.items() if v is not None}, ""))
    return TrainConfig(**values)
