"""Quantization-aware fine-tuning of a trained model, so that its int8 export agrees with it.

    python scripts/finetune_int8.py runs/default-model --data ../shared/data/fer2013 \
        --out runs/default-model-int8/model.pt

Folds BatchNorm into the convolutions, trains the float and the simulated-int8 forward together
on the training split (see ferlab.training.quantization), and writes a model file whose weights
lie on their int8 grid. Prints per-epoch loss, training accuracies and float/int8 agreement.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ferlab.data.datamodule import TensorImageDataset, default_num_workers
from ferlab.data.transforms import train_transform
from ferlab.evaluation.evaluate import labelled_source, map_classes_to_model, trained_split
from ferlab.models.artifact import load_model_file, resolve_model_file, save_model_file
from ferlab.training.quantization import FinetuneStats, quantization_finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder or model file to start from")
    parser.add_argument("--data", required=True, help="data set with a train split")
    parser.add_argument("--out", required=True, type=Path, help="model file to write")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--agreement-weight", type=float, default=1.0)
    parser.add_argument(
        "--targets",
        choices=("teacher", "labels"),
        default="teacher",
        help="learn the starting model's probabilities (default) or the labels",
    )
    parser.add_argument(
        "--teacher", help="model file whose probabilities are learnt (default: the starting model)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="hinge margin (logits) keeping the float class first in the int8 forward; 0: off",
    )
    parser.add_argument("--augment", default="standard", help="augmentation preset")
    parser.add_argument("--limit", type=int, help="stratified sample of the train split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument(
        "--workers", type=int, help="data loader workers (default: as `ferlab train` picks them)"
    )
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    workers = default_num_workers() if args.workers is None else args.workers

    torch.manual_seed(args.seed)
    source_file = resolve_model_file(args.model)
    bundle = load_model_file(source_file)
    source = labelled_source(bundle.spec, args.data, "skip")
    mapping = map_classes_to_model(bundle.spec, source.classes, None, None, None)
    data = trained_split(
        bundle.spec, source, "train", mapping, "skip", limit=args.limit, seed=args.seed
    )
    to_model = torch.tensor([bundle.classes.index(name) for name in mapping.names])
    dataset = TensorImageDataset(
        data.images, to_model[data.labels], train_transform(args.augment, bundle.prep)
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )

    def report(stats: FinetuneStats) -> None:
        print(json.dumps({k: round(v, 4) for k, v in asdict(stats).items()}), flush=True)

    teacher_file = resolve_model_file(args.teacher) if args.teacher else source_file
    teacher = (
        load_model_file(teacher_file).model.eval().to(device) if args.targets == "teacher" else None
    )
    quantization_finetune(
        bundle.model.to(device),
        loader,
        epochs=args.epochs,
        lr=args.lr,
        teacher=teacher,
        label_smoothing=0.0 if teacher is not None else 0.1,
        agreement_weight=args.agreement_weight,
        margin=args.margin,
        on_epoch=report,
    )
    bundle.model.cpu()
    earlier = bundle.meta.get("int8_finetune", [])
    bundle.meta["int8_finetune"] = [
        *(earlier if isinstance(earlier, list) else [earlier]),
        {
            "from": str(source_file),
            "data": args.data,
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "agreement_weight": args.agreement_weight,
            "margin": args.margin,
            "targets": args.targets,
            "teacher": str(teacher_file) if teacher is not None else None,
            "augment": args.augment,
            "limit": args.limit,
            "seed": args.seed,
        },
    ]
    save_model_file(args.out, bundle)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
