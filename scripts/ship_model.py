"""Make a trained run a model that ships in the package: its model file and ONNX export.

    python scripts/ship_model.py runs/int8ft/kd3.pt --name fer2013 --int8-float-convs 33

Writes src/ferlab/weights/NAME.pt (the run's model, weights only, with its test-time augmentation
and prior defaults and the number of leading convolutions its int8 export keeps float) and
NAME.onnx (its fp32 export, which `Recognizer.load(NAME)` runs on onnxruntime), then checks that
the two agree. NAME is one of ferlab.models.artifact.SHIPPED_MODELS.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ferlab.data.sources import load_dataset
from ferlab.inference.onnx_export import export_onnx
from ferlab.inference.onnx_runner import OnnxModel
from ferlab.inference.runtime import load_model
from ferlab.models.artifact import (
    SHIPPED_MODELS,
    load_model_file,
    resolve_model_file,
    save_model_file,
)
from ferlab.models.prior import check_prior_tau
from ferlab.tta_modes import TTA_MODES

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "ferlab" / "weights"
MAX_BYTES = 25 * 10**6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder or model file")
    parser.add_argument("--name", required=True, choices=sorted(SHIPPED_MODELS))
    parser.add_argument(
        "--prior-tau",
        type=float,
        help="record the tau the model runs with by default (--prior-tau of predict, evaluate)",
    )
    parser.add_argument(
        "--class-prior-data",
        metavar="DATA",
        help="record the training class prior as the label shares of DATA's train split, for a "
        "model file that records none",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="flip",
        help="the test-time augmentation the model runs with by default (default: flip)",
    )
    parser.add_argument(
        "--int8-float-convs",
        type=int,
        metavar="N",
        help="record that `ferlab export --quantize int8` keeps the first N convolutions float "
        "(default: what the model file records, else 0)",
    )
    args = parser.parse_args()
    source = resolve_model_file(args.run)
    bundle = load_model_file(source)
    if source.stat().st_size > MAX_BYTES:
        sys.exit(f"{source}: {source.stat().st_size / 1e6:.1f} MB: too big to ship (limit 25 MB)")
    spec = replace(bundle.spec, tta=args.tta)
    if args.int8_float_convs is not None:
        spec = replace(spec, int8_float_convs=args.int8_float_convs)
    if args.class_prior_data is not None and spec.class_prior is None:
        counts = load_dataset(args.class_prior_data).splits["train"].class_counts()
        shares = np.array([counts.get(name, 0) for name in spec.classes], dtype=float)
        spec = replace(spec, class_prior=tuple(round(float(p), 6) for p in shares / shares.sum()))
    if args.prior_tau is not None:
        spec.prior(str(source))
        spec = replace(spec, prior_tau=check_prior_tau(args.prior_tau))
    bundle.spec = spec
    shipped = WEIGHTS / f"{args.name}.pt"
    save_model_file(shipped, bundle)
    onnx_file = export_onnx(shipped, WEIGHTS / f"{args.name}.onnx")
    batch = torch.rand(16, bundle.prep.in_channels, bundle.prep.input_size, bundle.prep.input_size)
    batch = ((batch - 0.5) / 0.25).numpy()
    torch_probs = load_model(shipped)(batch)
    onnx_probs = OnnxModel(onnx_file)(batch)
    difference = float(np.abs(torch_probs - onnx_probs).max())
    print(
        f"wrote {shipped} ({shipped.stat().st_size / 1e6:.1f} MB), {onnx_file} "
        f"({onnx_file.stat().st_size / 1e6:.1f} MB); max probability difference {difference:.2e}"
    )
    return 0 if difference < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
