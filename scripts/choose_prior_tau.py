"""Choose the prior τ a model ships with: sweep τ on the val split, pick the best balanced accuracy.

    python scripts/choose_prior_tau.py runs/ferplus-model --data ../shared/data/fer2013 \
        --labels ../shared/data/fer2013/ferplus.csv

Scores the model once on val (never on test) with its default test-time augmentation, then
divides the probabilities by the training class prior^τ for each τ of the sweep
(``ferlab.models.prior``) and prints accuracy, balanced accuracy, macro-F1 and the share of faces
answered with the most frequent training class beside the share labelled with it. The chosen τ
is recorded with ``scripts/ship_model.py --prior-tau``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

from ferlab.evaluation.evaluate import (
    SplitScorer,
    crowd_mapping,
    labelled_source,
)
from ferlab.inference.runtime import load_model
from ferlab.models.prior import prior_adjusted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder, model file or a shipped model's name")
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", help="crowd votes CSV laid over the data (as evaluate)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument(
        "--taus",
        default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
        help="comma-separated values to try",
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
    print(f"{model_file} ({tta} TTA) on {args.data} [{args.split}], {len(labels)} faces")
    print(f"| tau | accuracy | balanced accuracy | macro-F1 | answered {name} | labelled {name} |")
    print("|---|---|---|---|---|---|")
    best: tuple[float, float] | None = None
    for tau in (float(t) for t in args.taus.split(",")):
        predicted = prior_adjusted(probs, prior, tau).argmax(axis=1)
        balanced = balanced_accuracy_score(labels, predicted)
        macro = f1_score(labels, predicted, average="macro", zero_division=0)
        print(
            f"| {tau:g} | {np.mean(predicted == labels):.4f} | {balanced:.4f} | {macro:.4f} | "
            f"{np.mean(predicted == common):.4f} | {np.mean(labels == common):.4f} |"
        )
        if best is None or balanced > best[1]:
            best = (tau, balanced)
    assert best is not None
    print(f"best balanced accuracy on {args.split}: tau = {best[0]:g} ({best[1]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
