"""Quantization-aware fine-tuning: a model whose int8 export predicts what the model itself does.

Static int8 (per-channel symmetric weights, per-tensor activations, as ``ferlab export --quantize
int8`` writes it) adds rounding noise in every layer; on a MobileNetV2 that flips the top-1 class
of a few percent of faces. This module trains that noise away:

1. :func:`fold_batchnorm` moves each BatchNorm into the convolution before it (the BatchNorm stays,
   as a pure bias), so the weights trained are the ones the ONNX export quantizes;
2. :class:`QuantizationSimulator` rounds those weights to their int8 grid on every forward (with a
   straight-through gradient) and, when switched on, activations at the points onnxruntime
   quantizes (input, every convolution or residual sum, the pooled features, the logits);
3. :func:`quantization_finetune` trains the float and the simulated-int8 forward together:
   both learn the labels, or better the predictions of the model as it was (distillation keeps
   its accuracy), and a KL term pulls the int8 probabilities onto the float ones;
4. :meth:`QuantizationSimulator.finish` leaves the weights on their int8 grid, so the float model
   that ships and its int8 export share the same weights exactly.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

INT8_WEIGHT_LEVELS = 127  # symmetric weights use -127..127, as onnxruntime quantizes them
ACTIVATION_RANGE = (-128, 127)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d into the Conv2d before it in a Sequential; returns how many.

    The convolution takes the scale; the BatchNorm keeps only the shift (running mean 0, running
    variance 1 - eps, weight 1, frozen), so outputs and ``state_dict`` keys stay as they were.
    """
    folded = 0
    for sequence in model.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        children = list(sequence.children())
        for conv, norm in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                _fold_pair(conv, norm)
                folded += 1
    return folded


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    assert norm.running_mean is not None and norm.running_var is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift += conv.bias * scale
        conv.bias.zero_()
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0 - norm.eps)
    norm.weight.fill_(1.0)
    norm.bias.copy_(shift)
    norm.weight.requires_grad_(False)


def int8_grid(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` rounded to its per-output-channel symmetric int8 grid (max |w| → 127)."""
    amax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (amax / INT8_WEIGHT_LEVELS).reshape(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(torch.round(weight / scale), -INT8_WEIGHT_LEVELS, INT8_WEIGHT_LEVELS) * scale


class _WeightOnGrid(nn.Module):
    """Parametrization: the weight as int8 would hold it; gradients pass straight through."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (int8_grid(weight) - weight).detach()


class ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric int8 fake quantization with a running min/max range.

    ``observe``: update the range (exponential average of batch minima and maxima) from what
    passes; ``active``: round what passes to the int8 grid of that range.
    """

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.observe = True
        self.active = False
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            self._update(x.detach())
        if not self.active or not bool(self.seen):
            return x
        low, high = min(float(self.low), 0.0), max(float(self.high), 0.0)
        scale = max((high - low) / (ACTIVATION_RANGE[1] - ACTIVATION_RANGE[0]), 1e-12)
        zero_point = round(ACTIVATION_RANGE[0] - low / scale)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, *ACTIVATION_RANGE)

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        low, high = x.min(), x.max()
        if not bool(self.seen):
            self.low.copy_(low)
            self.high.copy_(high)
            self.seen.fill_(True)
            return
        self.low.lerp_(low, self.momentum)
        self.high.lerp_(high, self.momentum)


class QuantizationSimulator:
    """Simulated int8 on a MobileNetV2-style model (see the module docstring); a context of use:
    build it on a model after :func:`fold_batchnorm`, train, then call :meth:`finish`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.quantizers: list[ActivationQuantizer] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._weights: list[nn.Module] = []
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                parametrize.register_parametrization(module, "weight", _WeightOnGrid())
                self._weights.append(module)
        self._quantize_input(model)
        for module in model.modules():
            if isinstance(module, (Conv2dNormActivation, nn.Linear)):
                self._quantize_output(module)
            elif isinstance(module, InvertedResidual):
                self._quantize_output(module.conv)
                if module.use_res_connect:
                    self._quantize_output(module)
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            self._quantize_output(backbone)

    def _new_quantizer(self) -> ActivationQuantizer:
        quantizer = ActivationQuantizer().to(self.device)
        self.quantizers.append(quantizer)
        return quantizer

    def _quantize_input(self, module: nn.Module) -> None:
        quantizer = self._new_quantizer()
        self._hooks.append(module.register_forward_pre_hook(lambda _, args: (quantizer(args[0]),)))

    def _quantize_output(self, module: nn.Module) -> None:
        quantizer = self._new_quantizer()
        self._hooks.append(module.register_forward_hook(lambda _m, _i, out: quantizer(out)))

    def set(self, *, active: bool, observe: bool) -> None:
        """Switch activation rounding and range observation for every quantizer."""
        for quantizer in self.quantizers:
            quantizer.active, quantizer.observe = active, observe

    def finish(self) -> None:
        """Remove the simulation; the weights stay on their int8 grid."""
        for hook in self._hooks:
            hook.remove()
        for module in self._weights:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        self._hooks.clear()
        self._weights.clear()


@dataclass
class FinetuneStats:
    """What one epoch of :func:`quantization_finetune` measured."""

    epoch: int
    loss: float
    float_accuracy: float
    int8_accuracy: float
    agreement: float
    seconds: float


def _margin_loss(logits: torch.Tensor, classes: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge ``max(0, margin - (logit of classes - best other logit))``."""
    chosen = logits.gather(1, classes[:, None])[:, 0]
    others = logits.scatter(1, classes[:, None], float("-inf")).amax(1)
    return F.relu(margin - (chosen - others)).mean()


def _freeze_norms(model: nn.Module) -> None:
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.Dropout)):
            module.eval()


def quantization_finetune(
    model: nn.Module,
    batches: DataLoader,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.1,
    teacher: nn.Module | None = None,
    agreement_weight: float = 1.0,
    margin: float = 0.0,
    calibration_batches: int = 20,
    on_epoch: Callable[[FinetuneStats], None] | None = None,
) -> None:
    """Fine-tune ``model`` (class logits out) so its int8 export agrees with it; in place.

    ``batches``: (images, labels) of the training data, re-iterated each epoch; its first
    ``calibration_batches`` only measure activation ranges. ``teacher``: a model whose
    probabilities both forwards learn instead of the labels (the model as it was: keeps what it
    predicts). ``margin``: when above 0, a hinge loss keeping the float model's class ahead of
    every other in the int8 logits by that much. AdamW with a cosine decay from ``lr``; BatchNorm
    statistics and dropout stay frozen. Batches move to the device of ``model`` (and of
    ``teacher``, which must share it). On return the weights lie on their int8 grid.
    """
    device = next(model.parameters()).device
    fold_batchnorm(model)
    simulator = QuantizationSimulator(model)
    try:
        model.eval()
        simulator.set(active=False, observe=True)
        with torch.no_grad():
            for step, (images, _) in enumerate(batches):
                if step >= calibration_batches:
                    break
                model(images.to(device))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        total = epochs * len(batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
        for epoch in range(epochs):
            _freeze_norms(model)
            start, sums = time.perf_counter(), torch.zeros(5, device=device)
            for batch_images, batch_labels in batches:
                images, labels = batch_images.to(device), batch_labels.to(device)
                simulator.set(active=False, observe=False)
                float_logits = model(images)
                simulator.set(active=True, observe=True)
                int8_logits = model(images)
                if teacher is not None:
                    with torch.no_grad():
                        target = torch.softmax(teacher(images), 1)
                else:
                    target = labels
                loss = (
                    F.cross_entropy(float_logits, target, label_smoothing=label_smoothing)
                    + F.cross_entropy(int8_logits, target, label_smoothing=label_smoothing)
                ) / 2 + agreement_weight * F.kl_div(
                    F.log_softmax(int8_logits, 1),
                    F.log_softmax(float_logits, 1),
                    log_target=True,
                    reduction="batchmean",
                )
                if margin > 0:
                    loss = loss + _margin_loss(int8_logits, float_logits.detach().argmax(1), margin)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                float_top, int8_top = float_logits.argmax(1), int8_logits.argmax(1)
                sums += torch.stack(
                    [
                        loss.detach() * len(labels),
                        (float_top == labels).sum(),
                        (int8_top == labels).sum(),
                        (float_top == int8_top).sum(),
                        torch.tensor(len(labels), device=device),
                    ]
                ).float()
            if on_epoch is not None:
                count = float(sums[4])
                on_epoch(
                    FinetuneStats(
                        epoch,
                        float(sums[0]) / count,
                        float(sums[1]) / count,
                        float(sums[2]) / count,
                        float(sums[3]) / count,
                        time.perf_counter() - start,
                    )
                )
    finally:
        simulator.finish()
    model.eval()
