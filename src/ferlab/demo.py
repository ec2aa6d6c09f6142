"""``make demo``: a short, real train-and-evaluate run on FER2013, until a model ships.

Fine-tunes ImageNet MobileNetV2 (64 px) for a few epochs on a per-class slice of the FER2013
training split, selects on the validation split, and evaluates on PrivateTest; prints the report
and where the run lies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ferlab.errors import FerlabError

DEFAULT_DATA = Path("../shared/data/fer2013")


def main() -> int:
    from ferlab.evaluation.evaluate import evaluate
    from ferlab.evaluation.metrics import format_report
    from ferlab.training.run import train

    data = Path(os.environ.get("FERLAB_DEMO_DATA", DEFAULT_DATA))
    if not data.is_dir():
        print(
            f"ferlab demo: error: {data}: FER2013 folders not found "
            "(set FERLAB_DEMO_DATA to a {train,val,test}/<class>/ tree)",
            file=sys.stderr,
        )
        return 2
    try:
        result = train(
            data=str(data),
            model="mobilenet_v2",
            strategy="finetune",
            input_size=64,
            epochs=3,
            limit_per_class=600,
            batch_size=64,
            backbone_lr_factor=0.5,
            runs_dir="runs",
            name="demo",
        )
        report = evaluate(result.run_dir, data, split="test")
    except FerlabError as exc:
        print(f"ferlab demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nrun folder: {result.run_dir}")
    print(f"FER2013 PrivateTest ({report.metrics['samples']} images):")
    print(format_report(report.metrics))
    print(f"\nwrote {report.out_dir}/: metrics.json, report.md, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
