"""Markdown tables for MODEL_CARD.md from `ferlab evaluate` outputs, so no figure is retyped.

    python scripts/model_card_tables.py evaluations/default-test [evaluations/default-val ...]

Per folder (its metrics.json): the headline figures, per-class precision/recall/F1/ROC AUC, and the
confusion matrix with row-normalised recall.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ferlab.tta_modes import tta_mode


def headline(name: str, m: dict[str, Any]) -> str:
    temperature = m.get("temperature")
    after = m.get("ece_after_temperature")
    scaled = f"{after:.4f} (T = {temperature:.3f})" if after is not None else "–"
    return (
        f"| {name} | {m['samples']} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} "
        f"| {m['macro_f1']:.4f} | {m['cohen_kappa']:.4f} | {m['krippendorff_alpha']:.4f} "
        f"| {m['roc_auc_macro']:.4f} | {m['ece']:.4f} | {scaled} |"
    )


def per_class(m: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | F1 | ROC AUC | PR AUC | support |", "|---" * 7 + "|"]
    for name in m["classes"]:
        row = m["per_class"][name]
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} "
            f"| {row['roc_auc']:.4f} | {row['pr_auc']:.4f} | {row['support']} |"
        )
    return lines


def confusion(m: dict[str, Any]) -> list[str]:
    names = m["classes"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, m["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(count) for count in row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate output folders")
    args = parser.parse_args()
    loaded = [(f, json.loads((f / "metrics.json").read_text())) for f in args.folders]
    print(
        "| evaluation | images | accuracy | balanced acc. | macro-F1 | Cohen's κ "
        "| Krippendorff's α | ROC AUC (macro) | ECE | ECE after temperature |"
    )
    print("|---" * 10 + "|")
    for _, metrics in loaded:
        mode = tta_mode(metrics.get("tta"))
        tta = f", {mode} TTA" if mode != "none" else ""
        print(headline(f"{metrics['split']}{tta}", metrics))
    for folder, metrics in loaded:
        print(f"\n{folder} ({metrics['split']}): per class\n")
        print("\n".join(per_class(metrics)))
        print("\nconfusion matrix (rows: true class)\n")
        print("\n".join(confusion(metrics)))


if __name__ == "__main__":
    main()
