"""The model contract: everything inference and evaluation need to know about a trained model.

A :class:`ModelSpec` travels with the weights, in the model file (format 2: ``payload["spec"]``)
and in an ONNX export's metadata (``spec``). It names the architecture and head, the classes,
how crops are decoded (size and colour) and normalised, the default test-time augmentation, the
class mapping and split options training used (for data without fixed splits), where the labels
came from, the training class prior and the recommended int8 options. It owns the crop → tensor
step. Files of format 1 (the options in ``meta["config"]``, ``meta["tta"]``, ...) load through
:func:`legacy_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ferlab.errors import ConfigError, ModelError
from ferlab.models import bounds
from ferlab.models.prior import check_prior_tau, checked_shares, recorded_prior
from ferlab.preprocessing import Preprocessing, eval_transform
from ferlab.tta_modes import tta_mode

LABEL_MODES = ("single", "majority", "distribution")
ENSEMBLE_NAME = "ensemble"  # ModelSpec.name of an ensemble; its members name their architectures
MAX_MEMBERS = 16
_TEXT_OPTIONS = ("keep", "rename", "merge", "label_source", "cache_dir")
SPEC_TRAINING_OPTIONS = (  # TrainConfig options the spec records under the same names
    "image_size",
    "color",
    "keep",
    "rename",
    "merge",
    "val_fraction",
    "test_fraction",
    "seed",
    "cache_dir",
)


@dataclass(frozen=True)
class EnsembleMember:
    """One model of an ensemble: its architecture, head, input and share of the average."""

    name: str
    head: str
    prep: Preprocessing
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "head": self.head,
            "preprocessing": self.prep.to_dict(),
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, file: Path, index: int, value: Any) -> EnsembleMember:
        where = f"spec.members[{index}]"
        data = bounds.checked_mapping(file, where, value)
        missing = sorted({"name", "preprocessing"} - set(data))
        if missing:
            raise ModelError(f"{file}: {where}: missing {', '.join(missing)}")
        weight = bounds.checked_weight(file, f"{where}.weight", data.get("weight", 1.0))
        return cls(
            name=bounds.checked_text(file, f"{where}.name", data["name"]),
            head=bounds.checked_text(file, f"{where}.head", data.get("head", "linear")),
            prep=bounds.checked_preprocessing(file, data["preprocessing"]),
            weight=weight,
        )


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model is and how to feed it; ``image_size`` None: the input size."""

    name: str
    classes: tuple[str, ...]
    prep: Preprocessing
    head: str = "linear"
    va: bool = False
    image_size: int | None = None  # side crops are decoded at before the model's own resize
    color: str = "gray"  # "gray" or "rgb"
    tta: str = "none"  # the test-time augmentation to run with by default
    keep: str | None = None  # class options training used (ferlab.data.classes)
    rename: str | None = None
    merge: str | None = None
    val_fraction: float = 0.1  # split options for data without fixed splits
    test_fraction: float = 0.1
    seed: int = 0
    label_source: str | None = None  # crowd-votes file the labels came from; None: the data's
    label_mode: str = "single"
    class_prior: tuple[float, ...] | None = None  # training class shares (ferlab.models.prior)
    prior_tau: float = 0.0
    int8_float_convs: int = 0  # leading convolutions an int8 export keeps float
    cache_dir: str | None = None  # the decoded-image cache training used (not exported)
    members: tuple[EnsembleMember, ...] = ()  # an ensemble's models (name: ENSEMBLE_NAME)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "tta", tta_mode(self.tta))
        if self.image_size is None:
            object.__setattr__(self, "image_size", self.prep.input_size)
        if self.class_prior is not None:
            object.__setattr__(self, "class_prior", tuple(float(p) for p in self.class_prior))

    @property
    def decode_size(self) -> int:
        return int(self.image_size or self.prep.input_size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["preprocessing"] = self.prep.to_dict()
        del data["prep"]
        data["members"] = [member.to_dict() for member in self.members]
        if self.class_prior is not None:
            data["class_prior"] = list(self.class_prior)
        return data

    @classmethod
    def from_dict(cls, file: Path, value: Any) -> ModelSpec:
        """A stored spec, every value checked (ModelError naming ``file`` and the key)."""
        data = bounds.checked_mapping(file, "spec", value)
        missing = sorted({"name", "classes", "preprocessing"} - set(data))
        if missing:
            raise ModelError(f"{file}: spec: missing {', '.join(missing)}")
        classes = bounds.checked_classes(file, data["classes"])
        prep = bounds.checked_preprocessing(file, data["preprocessing"])
        size, color = bounds.checked_decode(
            file, data.get("image_size", prep.input_size), data.get("color", "gray"), "spec"
        )
        fractions = {
            key: bounds.checked_fraction(file, f"spec.{key}", data.get(key, 0.1))
            for key in ("val_fraction", "test_fraction")
        }
        texts = {}
        for key in _TEXT_OPTIONS:
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ModelError(f"{file}: spec.{key}: expected text")
            texts[key] = data.get(key)
        label_mode = data.get("label_mode", "single")
        if label_mode not in LABEL_MODES:
            raise ModelError(f"{file}: spec.label_mode: expected one of {', '.join(LABEL_MODES)}")
        prior = data.get("class_prior")
        if prior is not None:
            prior = tuple(checked_shares(prior, str(file)))
        try:
            tau = check_prior_tau(data.get("prior_tau", 0.0))
        except (ConfigError, TypeError, ValueError):
            raise ModelError(f"{file}: spec.prior_tau: not in [0, 2]") from None
        return cls(
            name=bounds.checked_text(file, "spec.name", data["name"]),
            members=_checked_members(file, data.get("members", [])),
            classes=tuple(classes),
            prep=prep,
            head=bounds.checked_text(file, "spec.head", data.get("head", "linear")),
            va=bounds.checked_bool(file, "spec.va", data.get("va", False)),
            image_size=size,
            color=color,
            tta=tta_mode(bounds.checked_tta(file, data.get("tta", "none"))),
            seed=bounds.checked_int(file, "spec.seed", data.get("seed", 0), 0, 2**32 - 1),
            label_mode=str(label_mode),
            class_prior=prior,
            prior_tau=tau,
            int8_float_convs=bounds.checked_float_convs(file, data.get("int8_float_convs", 0)),
            **fractions,
            **texts,
        )

    def for_export(self) -> ModelSpec:
        """The spec an export carries: without this machine's cache folder."""
        return replace(self, cache_dir=None)

    def class_options(self) -> tuple[str | None, str | None, str | None]:
        """The (keep, rename, merge) options training mapped the data's classes with."""
        return self.keep, self.rename, self.merge

    def split_options(self) -> dict[str, Any]:
        """How training split data without fixed splits, as ``load_dataset`` options."""
        return {
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
        }

    def check_prior(self, file: Path) -> None:
        """A ModelError where the recorded prior does not hold one share per class; loaders call
        it once the classes are known to fit the model's output."""
        if self.class_prior is not None:
            recorded_prior(self.class_prior, self.classes, str(file))

    def prior(self, where: str) -> np.ndarray:
        """The training class prior, or ModelError naming ``where`` when none is recorded."""
        return recorded_prior(self.class_prior, self.classes, where)

    def crop_tensor(self, crop_rgb: np.ndarray) -> torch.Tensor:
        """An RGB uint8 crop (H, W, 3) → uint8 (C, S, S) at the decode size and colour, the way
        training decoded its images (PIL, bilinear)."""
        size = self.decode_size
        image = Image.fromarray(crop_rgb).convert("L" if self.color == "gray" else "RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        array = np.array(image, dtype=np.uint8)
        return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())

    def eval_transform(self) -> torch.nn.Module:
        """uint8 (C, H, W) → normalised float tensor at the model's input size."""
        return eval_transform(self.prep)

    def model_input(
        self, crops: Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray
    ) -> np.ndarray:
        """uint8 crops (C, H, W) as :meth:`crop_tensor` makes them (torch tensors or numpy
        arrays), a list of them or a batch (N, C, H, W) → normalised float32 (N, C, S, S)."""
        if isinstance(crops, torch.Tensor | np.ndarray):
            batch = _uint8_crop(crops)
        else:
            batch = torch.stack([_uint8_crop(crop) for crop in crops])
        if batch.ndim not in (3, 4) or batch.shape[-3] not in bounds.CHANNELS:
            raise ValueError(
                f"model_input takes crops (C, H, W) or a batch (N, C, H, W) with 1 or 3 "
                f"channels, got shape {tuple(batch.shape)}"
            )
        return self.eval_transform()(batch if batch.ndim == 4 else batch[None]).numpy()


def _uint8_crop(crop: Any) -> torch.Tensor:
    """A uint8 crop or batch as a tensor, or a TypeError that says what model_input takes."""
    if isinstance(crop, np.ndarray) and crop.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(crop))
    if isinstance(crop, torch.Tensor) and crop.dtype == torch.uint8:
        return crop
    got = (
        f"{type(crop).__name__} of {crop.dtype}" if hasattr(crop, "dtype") else type(crop).__name__
    )
    raise TypeError(
        f"model_input takes uint8 crops (C, H, W) as torch tensors or numpy arrays (see "
        f"crop_tensor), got {got}"
    )


def _checked_members(file: Path, value: Any) -> tuple[EnsembleMember, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_MEMBERS:
        raise ModelError(f"{file}: spec.members: expected a list of at most {MAX_MEMBERS}")
    return tuple(EnsembleMember.from_dict(file, i, item) for i, item in enumerate(value))


class SpecView:
    """Shorthands for an object that holds a model and its ``spec``."""

    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def prep(self) -> Preprocessing:
        return self.spec.prep

    @property
    def head(self) -> str:
        return self.spec.head

    @property
    def va(self) -> bool:
        """Whether the model also predicts valence and arousal."""
        return self.spec.va


def legacy_spec(
    file: Path,
    *,
    name: Any,
    classes: Any,
    preprocessing: Any,
    head: Any = "linear",
    va: Any = False,
    meta: Mapping[str, Any],
    decode: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """The spec of a format-1 model file or ONNX export: the training options in
    ``meta["config"]``, the TTA in ``meta["tta"]``, prior and int8 options beside them."""
    config = bounds.checked_mapping(file, "config", meta.get("config", {}))
    data: dict[str, Any] = {
        "name": name,
        "classes": classes,
        "preprocessing": preprocessing,
        "head": head,
        "va": va,
        "tta": meta.get("tta"),
    }
    decoded = decode if decode is not None else config
    for key in SPEC_TRAINING_OPTIONS:
        source = decoded if key in ("image_size", "color") else config
        if source.get(key) is not None:
            data[key] = source[key]
    for key in ("label_source", "label_mode", "class_prior", "prior_tau", "int8_float_convs"):
        if meta.get(key) is not None:
            data[key] = meta[key]
    return ModelSpec.from_dict(file, data)
