"""Soft labels for distillation: a teacher's probabilities on the training images mixed with the
crowd's votes, written as a labels CSV that `ferlab train --labels` reads.

    ferlab evaluate TEACHER --data ../shared/data/fer2013 \\
        --labels ../shared/data/fer2013/ferplus.csv --split train --out teacher-train
    python scripts/teacher_labels.py teacher-train/predictions.csv --data ../shared/data/fer2013 \\
        --labels ../shared/data/fer2013/ferplus.csv --teacher-weight 0.5 --out teacher-labels.csv

Each training image the teacher scored gets ``w * teacher + (1 - w) * votes`` over the classes
(the votes normalised over the expression classes, ``unknown`` and ``NF`` dropped); every other
row of the votes file (val, test, and the images training leaves out) is copied unchanged, so
selection and evaluation still use the crowd. Cross-entropy against the mixture is the usual
distillation loss, ``w`` times the loss against the teacher plus ``1 - w`` times the loss against
the crowd.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

from ferlab.data.soft_labels import NON_CLASS_COLUMNS, vote_class
from ferlab.errors import FerlabError
from ferlab.outputs import check_new, write_atomic


def teacher_labels(
    predictions: Path, data: Path, votes_file: Path, teacher_weight: float
) -> tuple[str, int]:
    """The mixed labels CSV as text, and the number of rows the teacher changed."""
    with predictions.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not any(key.startswith("p_") for key in rows[0]):
        raise FerlabError(f"{predictions}: no p_<class> columns (write it with ferlab evaluate)")
    teacher_classes = [key[2:] for key in rows[0] if key.startswith("p_")]
    with votes_file.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        votes_rows = list(reader)
    file_column = next((i for i, c in enumerate(header) if c in ("file", "path")), None)
    if file_column is None:
        raise FerlabError(f"{votes_file}: no file or path column")
    class_columns = {
        i: vote_class(c)
        for i, c in enumerate(header)
        if vote_class(c) in teacher_classes and c.lower() not in NON_CLASS_COLUMNS
    }
    missing = sorted(set(teacher_classes) - set(class_columns.values()))
    if missing:
        raise FerlabError(f"{votes_file}: no column for {', '.join(missing)}")
    teacher = {
        Path(os.path.relpath(row["path"], data)).as_posix(): np.array(
            [float(row[f"p_{c}"]) for c in teacher_classes]
        )
        for row in rows
    }
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    changed = 0
    for row in votes_rows:
        probs = teacher.get(row[file_column])
        if probs is not None:
            votes = np.array([float(row[i]) for i in class_columns])
            crowd = votes / votes.sum()
            order = [teacher_classes.index(name) for name in class_columns.values()]
            mixed = teacher_weight * probs[order] / probs.sum() + (1 - teacher_weight) * crowd
            row = list(row)
            for value, column in zip(mixed, class_columns, strict=True):
                row[column] = f"{value:.5f}"
            for i, column in enumerate(header):
                if column.lower() in NON_CLASS_COLUMNS:
                    row[i] = "0"
            changed += 1
        writer.writerow(row)
    return text.getvalue(), changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="predictions.csv of ferlab evaluate")
    parser.add_argument("--data", type=Path, required=True, help="the data set evaluate read")
    parser.add_argument("--labels", type=Path, required=True, help="the crowd's votes CSV")
    parser.add_argument("--teacher-weight", type=float, default=0.5, metavar="W")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        if not 0 < args.teacher_weight <= 1:
            raise FerlabError("--teacher-weight: must be in (0, 1]")
        check_new([args.out], exist_ok=False)
        text, changed = teacher_labels(
            args.predictions, args.data, args.labels, args.teacher_weight
        )
        write_atomic(args.out, text.encode())
    except (FerlabError, OSError) as exc:
        print(f"teacher_labels: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {changed} training images relabelled (teacher {args.teacher_weight})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
