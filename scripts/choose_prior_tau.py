"""Choose the prior τ a model ships with: sweep τ on the val split, pick the best balanced accuracy.

    python scripts/choose_prior_tau.py runs/ferplus-model --data ../shared/data/fer2013 \
        --labels ../shared/data/fer2013/ferplus.csv --max-accuracy-drop 0.001

Scores the model once on val (never on test) with its default test-time augmentation, then
divides the probabilities by the training class prior^τ for each τ of the sweep
(``ferlab.models.prior``) and prints accuracy, balanced accuracy, macro-F1 and the share of faces
answered with the most frequent training class beside the share labelled with it. The chosen τ
has the best balanced accuracy among the values whose accuracy is at most ``--max-accuracy-drop``
below the accuracy without adjustment (τ = 0); it is recorded with
``scripts/ship_model.py --prior-tau``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

from ferlab.errors import ConfigError
from ferlab.evaluation.evaluate import (
    SplitScorer,
    crowd_mapping,
    labelled_source,
)
from ferlab.inference.runtime import load_model
from ferlab.models.prior import check_prior_tau, prior_adjusted


@dataclass(frozen=True)
class TauScore:
    """The val figures of one τ."""

    tau: float
    accuracy: float
    balanced: float
    macro_f1: float
    answered_common: float


def sweep(
    probs: np.ndarray, labels: np.ndarray, prior: np.ndarray, taus: list[float]
) -> list[TauScore]:
    """Scores of the prior-adjusted answers for τ = 0 and each of ``taus``, in that order;
    ``answered_common`` is the share answered with the class of the largest prior."""
    common = int(np.argmax(prior))
    rows = []
    for tau in [0.0, *(t for t in taus if t != 0.0)]:
        predicted = prior_adjusted(probs, prior, tau).argmax(axis=1)
        rows.append(
            TauScore(
                tau=tau,
                accuracy=float(np.mean(predicted == labels)),
                balanced=float(balanced_accuracy_score(labels, predicted)),
                macro_f1=float(f1_score(labels, predicted, average="macro", zero_division=0)),
                answered_common=float(np.mean(predicted == common)),
            )
        )
    return rows


def choose(rows: list[TauScore], max_accuracy_drop: float) -> TauScore:
    """The row of best balanced accuracy among those whose accuracy is at most
    ``max_accuracy_drop`` below the first row's (τ = 0); the smaller τ on a tie."""
    floor = rows[0].accuracy - max_accuracy_drop - 1e-12
    allowed = [row for row in rows if row.accuracy >= floor]
    return max(allowed, key=lambda row: (row.balanced, -row.tau))


def tau_list(text: str) -> list[float]:
    """``--taus``: comma-separated values, each a valid prior τ."""
    try:
        return [check_prior_tau(float(value)) for value in text.split(",")]
    except (ValueError, ConfigError) as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def accuracy_drop(text: str) -> float:
    """``--max-accuracy-drop``: a fraction in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in [0, 1]")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder, model file or a shipped model's name")
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", help="crowd votes CSV laid over the data (as evaluate)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument(
        "--taus",
        type=tau_list,
        default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
        help="comma-separated values to try",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=accuracy_drop,
        default=1.0,
        help="only τ whose accuracy is at most this below τ = 0's may be chosen, as a fraction "
        "(0.001: a tenth of a point; default 1: any)",
    )
    args = parser.parse_args()
    runner = load_model(args.model)
    model_file, spec = runner.source, runner.spec
    prior = spec.prior(str(model_file))
    source = labelled_source(spec, args.data, "skip", args.labels)
    mapping, _ = crowd_mapping(spec, source, None, None, None, args.labels is not None)
    scorer = SplitScorer(runner, mapping, 0.0)
    tta = spec.tta
    _, labels, probs, _ = scorer.predict(source, args.split, "skip", 256, tta)
    columns = [spec.classes.index(name) for name in scorer.classes]
    prior = prior[columns] / prior[columns].sum()
    common = int(np.argmax(prior))
    name = scorer.classes[common]
    rows = sweep(probs, labels, prior, args.taus)
    print(f"{model_file} ({tta} TTA) on {args.data} [{args.split}], {len(labels)} faces")
    print(f"| tau | accuracy | balanced accuracy | macro-F1 | answered {name} | labelled {name} |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.tau:g} | {row.accuracy:.4f} | {row.balanced:.4f} | {row.macro_f1:.4f} | "
            f"{row.answered_common:.4f} | {np.mean(labels == common):.4f} |"
        )
    chosen = choose(rows, args.max_accuracy_drop)
    print(
        f"best balanced accuracy on {args.split} within {args.max_accuracy_drop:g} of tau = 0's "
        f"accuracy: tau = {chosen.tau:g} ({chosen.balanced:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
