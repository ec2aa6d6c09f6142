"""``ferlab explain``: heatmaps of what the model looked at, one PNG per face."""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.commands.recognizer_options import add_face_options, face_options
from ferlab.errors import DataError, FerlabError
from ferlab.outputs import (
    check_new,
    check_not_input,
    check_outside_data,
    check_writable,
    write_atomic,
)
from ferlab.progress import add_quiet_option, track

if TYPE_CHECKING:
    import numpy as np

    from ferlab.inference.results import Explanation

METHOD_CHOICES = ("gradcam", "gradcam++", "eigencam", "scorecam")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "explain",
        help="heatmaps of the face regions behind each prediction",
        description="Write the photo with a class activation heatmap over each detected face, "
        "each face boxed and captioned, and a colour scale as <stem>_explained.png, and the "
        "heatmap over each face crop as <stem>_face<k>_<class>.png; print one line per file. "
        "Probabilities use the model's test-time augmentation as predict does; each heatmap is "
        "of one view. Unreadable files are reported on stderr (exit code 1 when some failed, 2 "
        "when nothing was written). The pictures of a same-named input in another folder all "
        "get -2, -3, ...; those left by an earlier run are kept unless --exist-ok, which replaces "
        "all of the photo's earlier pictures.",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="IMAGE", help="image files, folders (recursive) or globs"
    )
    parser.add_argument(
        "--model",
        default="default",
        help="shipped model (default, fer2013, ferplus), run folder or model file (default: "
        "default)",
    )
    parser.add_argument("--method", choices=METHOD_CHOICES, default="gradcam")
    parser.add_argument(
        "--target-class",
        metavar="CLASS",
        help="class to explain (default: each face's prediction)",
    )
    parser.add_argument(
        "--target-layer",
        metavar="LAYER",
        help="dotted module path below the backbone (default: its last convolutional stage)",
    )
    add_face_options(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("."), metavar="DIR", help="default: the current folder"
    )
    add_exist_ok_option(parser, "heatmaps of the same names")
    add_quiet_option(parser)
    parser.set_defaults(handler=_run_explain)


def _probabilities(tta: str) -> str:
    return "probabilities without TTA" if tta == "none" else f"probabilities with {tta} TTA"


def _pictures(
    name: Path,
    path: Path,
    image: np.ndarray,
    explanations: list[Explanation],
    method: str,
    margin: float,
    suffix: str = "",
) -> list[tuple[Path, bytes, str]]:
    """(file name, PNG, printed line): the whole photo (crop squares of ``margin``), then each
    face's crop; ``suffix`` (``-2``, ...) ends every name."""
    from PIL import Image

    from ferlab.inference.explain_figure import explanation_figure
    from ferlab.names import printable

    stem = name.with_suffix("")
    count = f"{len(explanations)} face{'s' if len(explanations) > 1 else ''}"
    pictures = [
        (
            stem.with_name(f"{stem.name}_explained{suffix}.png"),
            explanation_figure(image, explanations, method, margin=margin, title=printable(path)),
            f"{count}, {_probabilities(explanations[0].tta)}  ({method}, {path})",
        )
    ]
    for item in explanations:
        png = io.BytesIO()
        Image.fromarray(item.overlay).save(png, format="PNG")
        pictures.append(
            (
                stem.with_name(f"{stem.name}_face{item.face}_{item.label}{suffix}.png"),
                png.getvalue(),
                f"{item.label} {item.score:.2f}  ({method}, {path})",
            )
        )
    return pictures


def _suffix(stem: Path, taken: set[Path]) -> str:
    """``""`` for the first input of output stem ``stem`` in this run, then ``-2``, ``-3``, ...;
    the stem with its suffix joins ``taken``."""
    number = 1
    while (key := stem.with_name(stem.name + (f"-{number}" if number > 1 else ""))) in taken:
        number += 1
    taken.add(key)
    return key.name[len(stem.name) :]


def _earlier_pictures(stem: Path, suffix: str, classes: list[str]) -> list[Path]:
    """The pictures an earlier run wrote for output stem ``stem`` with ``suffix``: the photo's
    and each face's (of any of the model's ``classes``)."""
    if not stem.parent.is_dir():
        return []
    labels = "|".join(map(re.escape, classes))
    name = re.compile(re.escape(stem.name) + rf"_(?:explained|face\d+_(?:{labels}))(-\d+)?\.png")
    return [
        path
        for path in stem.parent.iterdir()
        if (found := name.fullmatch(path.name)) and (found[1] or "") == suffix
    ]


def _run_explain(args: argparse.Namespace) -> int:
    from PIL import Image

    from ferlab.inference.batch import find_images
    from ferlab.inference.explain import check_explain_options, explain_image, load_explainable
    from ferlab.inference.images import load_image

    check_explain_options(args.method, args.target_class, args.target_layer)
    files, problems = find_images(args.sources)
    if not files:
        raise DataError("; ".join(problems))
    for source in args.sources:
        check_outside_data(args.out, source)
    check_writable(args.out)
    bundle = load_explainable(args.model)
    options = face_options(args)
    inputs = {file.path.resolve() for file in files}
    stems: set[Path] = set()
    errors, written = list(problems), 0
    for file in track(files, "explain", unit="files"):
        try:
            image = load_image(file.path)
            explanations = explain_image(
                bundle,
                Image.fromarray(image),
                method=args.method,
                target_class=args.target_class,
                target_layer=args.target_layer,
                options=options,
                prior_tau=args.prior_tau,
            )
        except DataError as exc:
            errors.append(str(exc))
            continue
        if not explanations:
            print(f"{file.path}  no face found")
            continue
        stem = args.out / file.name.with_suffix("")
        suffix = _suffix(stem, stems)  # a same-named input in another folder: -2, -3, ...
        pictures = _pictures(
            file.name, file.path, image, explanations, args.method, options.margin, suffix
        )
        targets = [args.out / name for name, _, _ in pictures]
        try:  # all of a photo's pictures or none: never old ones mixed with new
            for out in targets:
                check_new([out], args.exist_ok)
                check_not_input(out, inputs)
            for stale in (
                _earlier_pictures(stem, suffix, bundle.spec.classes) if args.exist_ok else []
            ):
                if stale not in targets and stale.resolve() not in inputs:
                    stale.unlink()
            for out, (_, data, line) in zip(targets, pictures, strict=True):
                write_atomic(out, data)
                written += 1
                print(f"{out}  {line}")
        except FerlabError as exc:
            errors.append(str(exc))
    for message in errors:
        print(f"ferlab: error: {message}", file=sys.stderr)
    return 2 if not written else 1 if errors else 0
