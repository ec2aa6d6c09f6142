"""Test-time augmentation candidates on one FER2013 split: accuracy of each set of views, and
McNemar's test of each against flip averaging; the sweep that chose ``--tta shift``.

    python scripts/tta_sweep.py [--model FILE] [--data ../shared/data/fer2013] [--split val]

Views are made from the decoded 48 px crops: shifts move the content, edges repeated (as
``ferlab.data.tta`` does); crops of 44 px (centre and corners) are resized back to 48.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ferlab.data.classes import ClassMapping
from ferlab.data.tta import shifted
from ferlab.evaluation.compare import mcnemar
from ferlab.evaluation.evaluate import labelled_source, predict_probs, trained_split
from ferlab.inference.runtime import load_model
from ferlab.models.artifact import resolve_model_file

View = Callable[[torch.Tensor], torch.Tensor]


def shift(dx: int, dy: int) -> View:
    return lambda images: shifted(images, dx, dy)


def crop(x0: int, y0: int, size: int = 44) -> View:
    def view(images: torch.Tensor) -> torch.Tensor:
        part = images[..., y0 : y0 + size, x0 : x0 + size].float()
        resized = F.interpolate(part, size=images.shape[-1], mode="bilinear", antialias=True)
        return resized.round().clamp(0, 255).to(images.dtype)

    return view


def with_mirrors(views: list[View]) -> list[View]:
    return views + [lambda images, v=v: v(images).flip(-1) for v in views]


def candidates() -> dict[str, list[View]]:
    same: View = lambda images: images  # noqa: E731
    plus = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    diagonal = [(-1, -1), (1, -1), (-1, 1), (1, 1)]
    sets = {"none": [same], "flip": with_mirrors([same])}
    for step in (1, 2, 3):
        sets[f"flip + shifts of {step} px"] = with_mirrors(
            [same] + [shift(step * x, step * y) for x, y in plus]
        )
    sets["flip + diagonal shifts of 2 px"] = with_mirrors(
        [same] + [shift(2 * x, 2 * y) for x, y in diagonal]
    )
    sets["flip + shifts and diagonal shifts of 2 px"] = with_mirrors(
        [same] + [shift(2 * x, 2 * y) for x, y in plus + diagonal]
    )
    sets["ten-crop 44 px"] = with_mirrors(
        [crop(2, 2)] + [crop(x, y) for x in (0, 4) for y in (0, 4)]
    )
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=str(resolve_model_file("default").with_suffix(".onnx")),
        help="run folder, model file or .onnx export (default: the shipped model's ONNX export)",
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    args = parser.parse_args()
    bundle = load_model(args.model)
    source = labelled_source(bundle.spec, args.data, "skip")
    mapping = ClassMapping.build(source.classes)
    data = trained_split(bundle.spec, source, args.split, mapping, "skip")
    to_model = torch.tensor([bundle.classes.index(name) for name in mapping.names])
    labels = to_model[data.labels].numpy()
    images = data.images
    sets = candidates()
    first = images[:256]  # this sweep's 3 px shifts are the library's "shift" mode
    library = predict_probs(bundle, first, tta="shift")
    here = np.mean([predict_probs(bundle, v(first)) for v in sets["flip + shifts of 3 px"]], 0)
    np.testing.assert_allclose(library, here, atol=1e-5)
    rows = {}
    for name, views in sets.items():
        probs = np.mean([predict_probs(bundle, view(images)) for view in views], axis=0)
        rows[name] = (len(views), probs.argmax(1) == labels)
    flip = rows["flip"][1]
    print(f"{args.model} on {args.data} [{args.split}], {len(labels)} images\n")
    print("| views | count | accuracy | b (only flip right) | c (only these right) | McNemar p |")
    print("|---|---|---|---|---|---|")
    for name, (count, right) in rows.items():
        test = mcnemar(flip, right)
        print(f"| {name} | {count} | {right.mean():.4f} | {test.b} | {test.c} | {test.p:.3g} |")


if __name__ == "__main__":
    main()
