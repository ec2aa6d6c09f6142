"""Quantization-aware fine-tuning: BatchNorm folding, the int8 weight grid, simulated int8, and a
fine-tuned model whose ONNX export carries weights that int8 holds exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch.utils.data import DataLoader, TensorDataset

from ferlab.inference.onnx_export import export_onnx
from ferlab.models.artifact import ModelBundle, load_model_file, save_model_file
from ferlab.models.registry import create_model
from ferlab.models.spec import ModelSpec
from ferlab.preprocessing import Preprocessing
from ferlab.training.quantization import (
    FinetuneStats,
    QuantizationSimulator,
    fold_batchnorm,
    int8_grid,
    quantization_finetune,
)

REPO = Path(__file__).resolve().parents[1]


def _mobilenet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 3)
    with torch.no_grad():  # BatchNorm statistics and affine terms far from their defaults
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_fold_batchnorm_keeps_outputs_and_state_dict_keys() -> None:
    model = _mobilenet()
    x = torch.randn(4, 3, 32, 32)
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm(model) == 52
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert list(model.state_dict()) == keys
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(n.running_mean == 0) and torch.all(n.weight == 1) for n in norms)


def test_int8_grid_has_255_levels_per_output_channel() -> None:
    weight = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8).reshape(-1, 1, 1, 1)
    snapped = int8_grid(weight)
    scale = weight.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1) / 127
    steps = snapped / scale
    torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
    assert steps.abs().max() <= 127.0001
    assert torch.all((weight - snapped).abs() <= scale / 2 + 1e-7)
    torch.testing.assert_close(int8_grid(snapped), snapped)


def test_simulator_rounds_activations_only_when_active_and_finish_removes_it() -> None:
    model = _mobilenet()
    fold_batchnorm(model)
    x = torch.randn(8, 3, 32, 32)
    simulator = QuantizationSimulator(model)
    assert len(simulator.quantizers) == 65  # input, 52 conv outputs or sums, pooled, logits
    with torch.no_grad():
        simulator.set(active=False, observe=True)
        weights_on_grid = model(x)
        simulator.set(active=True, observe=False)
        simulated = model(x)
        simulator.finish()
        finished = model(x)
    assert not torch.allclose(simulated, weights_on_grid, atol=1e-4)
    torch.testing.assert_close(finished, weights_on_grid)
    conv = model.backbone.features.stem[0][0]
    assert not hasattr(conv, "parametrizations")
    torch.testing.assert_close(int8_grid(conv.weight), conv.weight)


def _onnx_weights(path: Path) -> list[np.ndarray]:
    graph = onnx.load(path).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return [
        initializers[node.input[1]]
        for node in graph.node
        if node.op_type in ("Conv", "Gemm") and node.input[1] in initializers
    ]


def test_finetuned_model_exports_weights_that_int8_holds_exactly(tmp_path: Path) -> None:
    model = _mobilenet()
    torch.manual_seed(1)
    images = torch.randn(64, 3, 32, 32)
    labels = (images[:, :, :16].mean((1, 2, 3)) > images[:, :, 16:].mean((1, 2, 3))).long()
    loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
    seen: list[FinetuneStats] = []
    quantization_finetune(
        model, loader, epochs=2, lr=1e-3, calibration_batches=2, on_epoch=seen.append
    )
    assert [s.epoch for s in seen] == [0, 1]
    assert all(0 <= s.agreement <= 1 and np.isfinite(s.loss) for s in seen)
    prep = Preprocessing(input_size=32, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    bundle = ModelBundle(model, ModelSpec("mobilenet_v2", ("a", "b", "c"), prep))
    save_model_file(tmp_path / "model.pt", bundle)
    weights = _onnx_weights(export_onnx(tmp_path / "model.pt", tmp_path / "model.onnx"))
    assert len(weights) == 53
    for weight in weights:
        rows = weight.reshape(weight.shape[0], -1)
        steps = rows / (np.abs(rows).max(1, keepdims=True) / 127)
        assert np.abs(steps - steps.round()).max() < 1e-3


def test_margin_loss_by_hand() -> None:
    from ferlab.training.quantization import _margin_loss

    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 5.0, 1.0]])
    # gaps of the given class over the best other: 1, -2, 4 → hinge at 1.5: 0.5, 3.5, 0
    loss = _margin_loss(logits, torch.tensor([0, 2, 1]), 1.5)
    assert loss.item() == pytest.approx((0.5 + 3.5 + 0.0) / 3)


def test_finetune_script_writes_a_model_on_the_int8_grid(
    pattern_tree: Path, tmp_path: Path
) -> None:
    start = tmp_path / "start.pt"
    prep = Preprocessing(input_size=48, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    classes = ["happy", "sad", "surprise"]
    save_model_file(
        start, ModelBundle(_mobilenet(), ModelSpec("mobilenet_v2", tuple(classes), prep))
    )
    out = tmp_path / "int8ft.pt"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "finetune_int8.py"), str(start), "--data",
         str(pattern_tree), "--out", str(out), "--batch-size", "16", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.splitlines()[0])
    assert stats["epoch"] == 0 and 0 <= stats["agreement"] <= 1
    bundle = load_model_file(out)
    assert bundle.classes == classes
    assert bundle.meta["int8_finetune"][0]["epochs"] == 1
    for module in bundle.model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.testing.assert_close(int8_grid(module.weight), module.weight)
