"""Generated AffectNet-layout trees whose labels can be learned from the pixels.

The class is a shape (horizontal bar, vertical bar, central square), valence sets the background
brightness and arousal the contrast of the shape against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHAPE_CODES = (0, 1, 2)  # neutral, happy, sad


def learnable_image(
    code: int, valence: float, arousal: float, rng: np.random.Generator, size: int = 32
) -> np.ndarray:
    """A gray image: shape from ``code``, brightness from valence, contrast from arousal."""
    mask = np.zeros((size, size), dtype=bool)
    third = size // 3
    if code == 0:
        mask[third : 2 * third, :] = True
    elif code == 1:
        mask[:, third : 2 * third] = True
    else:
        mask[third - 2 : 2 * third + 2, third - 2 : 2 * third + 2] = True
    background = 80 + 45 * valence
    amplitude = 70 + 60 * arousal
    image = background + amplitude * mask + rng.normal(0, 4, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def save_annotation(path: Path, value: float | int, as_string: bool) -> None:
    """Like the release: a 0-d array of a string; else a 0-d numeric array."""
    np.save(path, np.array(str(value)) if as_string else np.array(value))


def write_sample(
    folder: Path,
    name: str,
    image: np.ndarray,
    code: int,
    valence: float,
    arousal: float,
    as_string: bool = True,
) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{name}.jpg", quality=95)
    for kind, value in (("exp", code), ("val", valence), ("aro", arousal)):
        save_annotation(folder / "annotations" / f"{name}_{kind}.npy", value, as_string)


def make_affectnet_tree(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """``root/{train_set,val_set}/`` with ``counts[folder]`` learnable images per shape class;
    annotations alternate between string and numeric arrays, values rounded to 4 decimals."""
    rng = np.random.default_rng(seed)
    for folder, per_class in counts.items():
        number = 0
        for code in SHAPE_CODES:
            for _ in range(per_class):
                valence, arousal = (round(float(v), 4) for v in rng.uniform(-0.9, 0.9, 2))
                image = learnable_image(code, valence, arousal, rng)
                write_sample(
                    root / folder, str(number), image, code, valence, arousal, number % 2 == 0
                )
                number += 1
    return root


def make_synthetic_affectnet(root: Path) -> Path:
    """train_set 50 and val_set 20 images per class, plus 2 excluded and 1 unannotated image
    (the set of the multi-task tests and of the README's valence/arousal example)."""
    make_affectnet_tree(root, {"train_set": 50, "val_set": 20})
    image = learnable_image(1, 0.0, 0.0, np.random.default_rng(9))
    write_sample(root / "train_set", "contempt_none", image, 9, 0.1, 0.1)
    write_sample(root / "train_set", "no_face", image, 1, -2, -2)
    write_sample(root / "train_set", "lost", image, 1, 0.3, 0.3)
    (root / "train_set" / "annotations" / "lost_val.npy").unlink()
    return root
