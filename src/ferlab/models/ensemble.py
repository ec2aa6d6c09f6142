"""Ensembles: several trained models averaged into one model that has one contract.

An :class:`EnsembleModel` takes the decoded crop, normalised as its first member normalises (the
ensemble's preprocessing, at the decode size), brings it to each member's input (resized as each
member's own transform resizes, channels matched, renormalised), and averages the members' class
probabilities with their weights. Its logits are the log of that average, so softmax,
the prior adjustment, temperature scaling and ONNX export work on it as on any model. Every
member must answer the same classes from crops decoded the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ferlab.errors import ConfigError, FerlabError, ModelError
from ferlab.models.registry import FaceClassifier, FERModel, create_model
from ferlab.models.spec import ENSEMBLE_NAME, EnsembleMember, ModelSpec
from ferlab.preprocessing import Preprocessing

ENSEMBLE_HEAD = "mean"  # ModelSpec.head of an ensemble: the weighted mean of member probabilities


class MemberInput(nn.Module):
    """The ensemble's normalised input → a member's: resized, channels matched, renormalised."""

    def __init__(self, source: Preprocessing, target: Preprocessing) -> None:
        super().__init__()
        self.size = target.input_size
        self.channels = target.in_channels

        def stats(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

        self.register_buffer("source_mean", stats(source.mean), persistent=False)
        self.register_buffer("source_std", stats(source.std), persistent=False)
        self.register_buffer("target_mean", stats(target.mean), persistent=False)
        self.register_buffer("target_std", stats(target.std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * self.source_std + self.source_mean
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            smaller = self.size < pixels.shape[-1]
            pixels = functional.interpolate(
                pixels, size=(self.size, self.size), mode="bilinear", antialias=smaller
            )
        if pixels.shape[1] != self.channels:
            if self.channels == 3:
                pixels = pixels.expand(-1, 3, -1, -1)
            else:
                gray = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
                pixels = (pixels * gray).sum(dim=1, keepdim=True)
        return (pixels - self.target_mean) / self.target_std


class EnsembleModel(FaceClassifier):
    """Members averaged: ``forward`` gives the log of the weighted mean of their probabilities.

    ``outputs``: those logits, then valence and arousal averaged where every member predicts
    them. ``backbone`` and ``info`` are the first member's, so Grad-CAM explains
    the ensemble's answer through the first member's layers.
    """

    def __init__(
        self,
        members: Sequence[FERModel],
        prep: Preprocessing,
        member_preps: Sequence[Preprocessing],
        weights: Sequence[float],
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.inputs = nn.ModuleList(MemberInput(prep, target) for target in member_preps)
        shares = torch.tensor(weights, dtype=torch.float64)
        shares = shares / shares.max()  # in range first: 1e308 or 1e-320 weights sum badly
        self.register_buffer("shares", (shares / shares.sum()).float(), persistent=False)
        self.num_classes = members[0].num_classes
        self.va = all(member.va for member in members)
        self.info = members[0].info
        self.head_name = ENSEMBLE_HEAD

    @property
    def backbone(self) -> nn.Module:
        return self.members[0].backbone

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.zeros(x.shape[0], self.num_classes, device=x.device)
        va = torch.zeros(x.shape[0], 2, device=x.device)
        for member, member_input, share in zip(self.members, self.inputs, self.shares, strict=True):
            logits, member_va = member.split(member.outputs(member_input(x)))
            probs = probs + share * logits.softmax(dim=1)
            if self.va and member_va is not None:
                va = va + share * member_va
        logits = probs.clamp_min(1e-30).log()
        return torch.cat([logits, va], dim=1) if self.va else logits


def build_ensemble(file: Path, spec: ModelSpec) -> EnsembleModel:
    """The (untrained) ensemble a model file's spec describes; ModelError naming ``file``."""
    members = []
    for index, member in enumerate(spec.members):
        try:
            model = create_model(member.name, len(spec.classes), pretrained=False, head=member.head)
        except FerlabError as exc:
            raise ModelError(f"{file}: spec.members[{index}]: {exc}") from None
        if member.prep.in_channels != model.info.in_channels:
            raise ModelError(
                f"{file}: spec.members[{index}].preprocessing.in_channels: "
                f"{member.prep.in_channels}, but model '{member.name}' takes "
                f"{model.info.in_channels}"
            )
        members.append(model)
    return EnsembleModel(
        members, spec.prep, [m.prep for m in spec.members], [m.weight for m in spec.members]
    )


def ensemble_spec(
    specs: Sequence[ModelSpec], weights: Sequence[float], sources: Sequence[str]
) -> ModelSpec:
    """The contract of an ensemble of models with ``specs``: the first model's, its input at the
    decode size, with the members listed; ConfigError naming ``sources`` where the models cannot
    be averaged."""
    if len(specs) < 2:
        raise ConfigError("an ensemble needs at least two models")
    if len(weights) != len(specs):
        raise ConfigError(f"--weights: {len(weights)} weights for {len(specs)} models")
    if any(not np.isfinite(w) or w <= 0 for w in weights):
        raise ConfigError("--weights: every weight must be a number above 0")
    first = specs[0]
    for spec, source in zip(specs, sources, strict=True):
        if spec.members:
            raise ConfigError(f"{source}: already an ensemble; list its models instead")
        if spec.classes != first.classes:
            raise ConfigError(
                f"{source}: classes {', '.join(spec.classes)} differ from {sources[0]}'s "
                f"({', '.join(first.classes)}); an ensemble's models answer the same classes"
            )
        if (spec.decode_size, spec.color) != (first.decode_size, first.color):
            raise ConfigError(
                f"{source}: decodes crops at {spec.decode_size} px {spec.color}, "
                f"{sources[0]} at {first.decode_size} px {first.color}; an ensemble's models "
                "read the same crops"
            )
    members = tuple(
        EnsembleMember(spec.name, spec.head, spec.prep, float(weight))
        for spec, weight in zip(specs, weights, strict=True)
    )
    return replace(
        first,
        prep=replace(first.prep, input_size=first.decode_size),
        name=ENSEMBLE_NAME,
        head=ENSEMBLE_HEAD,
        va=all(spec.va for spec in specs),
        class_prior=_mean_prior(specs),
        int8_float_convs=0,
        members=members,
    )


def check_distinct_files(names: Sequence[str], files: Sequence[Path]) -> None:
    """Raise ConfigError naming the first of ``names`` whose model file (``files``, resolved, in
    the same order) an earlier name already gave: the same model twice, under any spelling."""
    for k, file in enumerate(files):
        if file in files[:k]:
            first = names[files.index(file)]
            raise ConfigError(f"{names[k]}: the same model file as {first} ({file})")


def _mean_prior(specs: Sequence[ModelSpec]) -> tuple[float, ...] | None:
    priors = [spec.class_prior for spec in specs if spec.class_prior is not None]
    if not priors:
        return None
    mean = np.mean(np.array(priors, dtype=np.float64), axis=0)
    return tuple(float(p) for p in mean / mean.sum())
