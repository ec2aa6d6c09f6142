"""Pretrained weight resolution: ImageNet weights (found offline, see
:mod:`ferlab.models.imagenet_files`, else downloaded by torchvision) or a local state-dict file,
and loading such a state dict into a backbone.

Every file is read with ``torch.load(..., weights_only=True)``, so a pickle that would run code
is refused.  A state dict may be in one of these formats:

* the full torchvision model (as published by torchvision, classifier included), or
* our backbone (``FERModel.backbone.state_dict()``), or
* a whole ``FERModel`` / training module state dict whose backbone keys carry a ``...backbone.``
  prefix (the head is ignored), optionally nested under a ``"state_dict"`` key.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ferlab.errors import ModelError

from .dlib_file import read_dlib_state
from .imagenet_files import download_url, find_imagenet_file, missing_hint
from .info import ModelInfo

__all__ = [
    "StateMismatch",
    "describe_pretrained",
    "load_backbone_state",
    "load_state_file",
    "module_names",
    "resolve_pretrained_state",
    "weights_file_problem",
]


class StateMismatch(ModelError):
    """A state dict whose keys or shapes do not fit the backbone (the caller adds the file)."""


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_state_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors from ``path`` with ``weights_only=True``; a ``.dat`` file is
    a network dlib serialised (:func:`ferlab.models.dlib_file.read_dlib_state`)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"weights file {p} does not exist")
    problem = weights_file_problem(p)
    if problem is not None:
        raise ModelError(f"cannot load weights file {p}: {problem}")
    if p.suffix == ".dat":
        return read_dlib_state(p)
    try:
        with warnings.catch_warnings():  # torch's note on an old or foreign pickle: refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a pickle (zip or legacy) weights-only unpickling refused
        raise ModelError(
            f"cannot load weights file {p}: refused: the file holds Python objects beyond "
            "weights (weights-only load)"
        ) from None
    except Exception as exc:  # torch raises many kinds for corrupt files
        raise ModelError(
            f"cannot load weights file {p}: not a plain state dict of tensors ({_one_line(exc)})"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ModelError(f"weights file {p} does not contain a state dict of tensors")
    return dict(obj)


def weights_file_problem(path: Path) -> str | None:
    """What makes ``path`` no weights file, from its size and first bytes and without unpickling
    (fast enough to list every model's file): unreadable, empty, or neither a torch zip archive
    nor a legacy torch pickle (``.dat``: any content); None where it may be one."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return (exc.strerror or type(exc).__name__).lower()
    if not head:
        return "empty file"
    if path.suffix != ".dat" and not head.startswith((b"PK\x03\x04", b"\x80")):
        return "not a torch weights file (neither a zip archive nor a pickle)"
    return None


def _imagenet_state(name: str, weights_name: str) -> dict[str, torch.Tensor]:
    found = find_imagenet_file(weights_name)
    if found is not None:
        return load_state_file(found)
    url = download_url(weights_name)
    if url is None:
        raise ModelError(f"no pretrained weights for {name} here: {missing_hint(weights_name)}")
    import torchvision.models

    weights = torchvision.models.get_weight(weights_name)
    said = io.StringIO()  # torch hub's "Downloading: ..." line, shown only if it downloaded
    try:
        with contextlib.redirect_stderr(said):
            state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
        sys.stderr.write(said.getvalue())
    except Exception as exc:  # no network, proxy, hash mismatch, disk full, ...
        raise ModelError(
            f"could not download pretrained weights for {name} ({_one_line(exc)}) from {url}: "
            f"{missing_hint(weights_name)}"
        ) from None
    return dict(state)


def resolve_pretrained_state(
    info: ModelInfo, pretrained: bool | str | os.PathLike[str]
) -> dict[str, torch.Tensor] | None:
    """The state dict to initialise model ``info.name`` with, or ``None`` for random init.

    ``False``: ``None``.  ``True``: the pretrained weights in ``ModelInfo.pretrained_weights``,
    from a local file if one is found, else downloaded by torchvision where it publishes them.
    A path: that local file.  Problems raise :class:`ModelError` naming the file.
    """
    name = info.name
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        if info.pretrained_weights is None:
            raise ModelError(f"model '{name}' has no pretrained weights")
        return _imagenet_state(name, info.pretrained_weights)
    if isinstance(pretrained, str | os.PathLike):
        return load_state_file(pretrained)
    raise ModelError(f"pretrained must be True, False or a file path, got {pretrained!r}")


def describe_pretrained(info: ModelInfo, pretrained: bool | str | os.PathLike[str]) -> str:
    """The file a ``pretrained`` argument refers to, for error messages."""
    if pretrained is True:
        weights_name = info.pretrained_weights
        found = find_imagenet_file(weights_name) if weights_name else None
        return str(found) if found else "ImageNet"
    return str(Path(pretrained).expanduser())


# --------------------------------------------------------------------------------------------
# Loading a state dict into a backbone


def module_names(root: nn.Module, prefix: str = "") -> dict[str, nn.Module]:
    """``{qualified name: module}`` of ``root`` and its sub-modules, names prefixed by ``prefix``.

    Builders record this for the torchvision model *before* regrouping it into our backbone;
    :func:`load_backbone_state` then translates torchvision keys by module identity.
    """
    out: dict[str, nn.Module] = {}
    for name, module in root.named_modules():
        full = ".".join(part for part in (prefix, name) if part)
        out[full] = module
    return out


def _strip_backbone_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = {k[: k.index("backbone.") + len("backbone.")] for k in state if "backbone." in k}
    if len(prefixes) != 1:
        return dict(state)
    prefix = prefixes.pop()
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _examples(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{len(keys)} (e.g. {shown})"


def _translate(
    state: Mapping[str, torch.Tensor],
    backbone: nn.Module,
    source: Mapping[str, nn.Module],
    drop_prefixes: tuple[str, ...],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename source (torchvision) keys to backbone keys via shared module objects."""
    backbone_ids = {id(m): name for name, m in backbone.named_modules()}
    rename = {
        src: backbone_ids[id(m)] for src, m in source.items() if id(m) in backbone_ids
    }  # source holds references, so ids are not reused
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key.startswith(drop_prefixes):
            continue
        parts = key.split(".")
        for i in range(len(parts) - 1, -1, -1):
            prefix = ".".join(parts[:i])
            if prefix in rename:
                out[".".join(p for p in (rename[prefix], *parts[i:]) if p)] = value
                break
        else:
            unexpected.append(key)
    return out, unexpected


def load_backbone_state(
    backbone: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: Mapping[str, nn.Module] | None = None,
    drop_prefixes: tuple[str, ...] = (),
) -> None:
    """Load ``state`` (our backbone's keys, or ``source``'s keys) into ``backbone``.

    ``source`` maps the torchvision model's module names to its modules (see
    :func:`module_names`), some of which were reused in ``backbone``; keys starting with one of
    ``drop_prefixes`` (the torchvision classifier) are ignored.  Missing or unknown keys and shape
    mismatches raise :class:`StateMismatch` (a :class:`ModelError`) with a one-line reason.
    """
    state = _strip_backbone_prefix(state)
    own_keys = set(backbone.state_dict())
    unexpected: list[str] = []
    if source is not None and not set(state) <= own_keys:
        state, unexpected = _translate(state, backbone, source, drop_prefixes)
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        reason = next((ln for ln in lines if ln.startswith("size mismatch")), lines[-1])
        raise StateMismatch(reason.rstrip(".")) from None
    unexpected += list(result.unexpected_keys)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {_examples(list(result.missing_keys))}")
    if unexpected:
        problems.append(f"unexpected keys {_examples(unexpected)}")
    if problems:
        raise StateMismatch("; ".join(problems))
