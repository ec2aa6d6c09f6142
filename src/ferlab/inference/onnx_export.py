"""Export a ferlab model to a self-contained ONNX file, optionally int8 (run by ``onnx_runner``).

The graph maps normalised float32 (N, C, S, S) input, any N, to class probabilities (softmax
included), output ``probs``; for a valence/arousal model the one output is ``probs_va``, the
probabilities followed by valence and arousal. The model's contract (``ModelSpec``) travels in
the file's ``metadata_props`` as ``spec``, the int8 options as ``int8``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from ferlab.cache_dir import default_cache_dir
from ferlab.errors import ConfigError, ModelError
from ferlab.inference.images import ImageSource, load_image
from ferlab.inference.onnx_runner import ONNX_FORMAT, ONNX_FORMAT_VERSION, output_name
from ferlab.models.artifact import ModelBundle, load_model_file, resolve_model_file
from ferlab.models.registry import FaceClassifier
from ferlab.progress import bar

OPSET = 18
QUANTIZE_MODES = ("int8",)
_CALIBRATION_BATCH = 32


def export_onnx(
    model_ref: str | Path | ModelBundle,
    out: str | Path,
    quantize: str | None = None,
    *,
    calibration: Sequence[ImageSource] | None = None,
    float_convs: int | None = None,
) -> Path:
    """Write the model of a run folder or model file (or one loaded by
    :func:`load_exportable`) to ``out`` as ONNX; returns ``out``.

    ``quantize="int8"``: static QDQ quantization (per-channel weights, activation ranges measured
    on ``calibration``: face crops as paths, bytes, PIL images or RGB arrays) when calibration
    images are given, else dynamic quantization (activations quantized at run time).
    ``float_convs``: the model's first convolutions (each ensemble member's), with the
    activations and sums between them, stay float (mixed precision for the layers most sensitive
    to int8); ``None``: the number the model file recommends (``int8_float_convs``), else 0.
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"quantize: unknown mode '{quantize}'; available: int8")
    if float_convs is not None and quantize is None:
        raise ConfigError("float_convs: only for int8 exports (quantize='int8')")
    bundle = model_ref if isinstance(model_ref, ModelBundle) else load_exportable(model_ref)
    if float_convs is None:
        float_convs = bundle.spec.int8_float_convs
    if quantize is not None:
        check_float_convs(bundle.model, float_convs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
        fp32 = Path(work) / "fp32.onnx"
        _export_fp32(bundle, fp32)
        final = fp32
        if quantize == "int8":
            final = Path(work) / "int8.onnx"
            _quantize_int8(fp32, final, bundle, calibration, float_convs)
        model = onnx.load(final)
        _set_metadata(model, bundle, float_convs if quantize else None)
        onnx.save(model, final)
        os.replace(final, out)
    return out


def load_exportable(model_ref: str | Path) -> ModelBundle:
    """The model of a run folder, model file or shipped name, to export; ModelError for an
    ``.onnx`` file."""
    file = resolve_model_file(model_ref)
    if file.suffix.lower() == ".onnx":
        raise ModelError(f"{file}: already an ONNX export; export its .pt model file instead")
    return load_model_file(file)


def check_float_convs(model: torch.nn.Module, float_convs: int) -> None:
    """Raise ConfigError unless ``float_convs`` is 0 or more and each model the export runs
    (each ensemble member) has that many convolutions to keep float."""
    if float_convs < 0:
        raise ConfigError(f"float_convs: must be 0 or more, got {float_convs}")
    per_model = member_convolutions(model)
    if float_convs > min(per_model):
        where = "the model has" if len(per_model) == 1 else "its smallest member has"
        raise ConfigError(f"float_convs: {float_convs}, but {where} {min(per_model)} convolutions")


class _ProbsAndVA(torch.nn.Module):
    """A valence/arousal model as one output: probabilities, then valence and arousal."""

    def __init__(self, model: FaceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, classes = self.model.outputs(x), self.model.num_classes
        return torch.cat([torch.softmax(outputs[:, :classes], dim=1), outputs[:, classes:]], dim=1)


def _export_fp32(bundle: ModelBundle, out: Path) -> None:
    size, channels = bundle.prep.input_size, bundle.prep.in_channels
    network = (
        _ProbsAndVA(bundle.model)
        if bundle.va
        else torch.nn.Sequential(bundle.model, torch.nn.Softmax(dim=1))
    ).eval()
    example = torch.zeros(2, channels, size, size)
    torch.onnx.export(
        network,
        (example,),
        out,
        input_names=["input"],
        output_names=[output_name(bundle.va)],
        opset_version=OPSET,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )


def _set_metadata(model: onnx.ModelProto, bundle: ModelBundle, float_convs: int | None) -> None:
    values = {
        "format": f"{ONNX_FORMAT}/{ONNX_FORMAT_VERSION}",
        "spec": json.dumps(bundle.spec.for_export().to_dict()),
    }
    if float_convs is not None:
        values["int8"] = json.dumps({"float_convs": float_convs})
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def member_convolutions(model: torch.nn.Module) -> list[int]:
    """The number of convolutions of each model an export runs one after the other: an
    ensemble's members in order, else the model itself."""
    members = getattr(model, "members", None)
    models = list(members) if isinstance(members, torch.nn.ModuleList) else [model]
    return [sum(isinstance(m, torch.nn.Conv2d) for m in each.modules()) for each in models]


def _leading_nodes(
    nodes: Sequence[onnx.NodeProto], convs: int, per_model: Sequence[int]
) -> list[str]:
    """Names of the nodes of the model's first ``convs`` convolutions and the activations and
    sums up to its next one; ``per_model``: each model's convolution count (an ensemble's
    members: each member's first ``convs``, and the averaging of their answers)."""
    if convs == 0:
        return []
    owners = _owners(nodes) if len(per_model) > 1 else [{0}] * len(nodes)
    seen = [0] * len(per_model)
    names: list[str] = []
    for node, members in zip(nodes, owners, strict=True):
        if not members:
            names.append(node.name)
        elif node.op_type == "Conv":
            if any(seen[m] < convs for m in members):
                names.append(node.name)
            for m in members:
                seen[m] += 1
        elif any(seen[m] <= convs for m in members):
            names.append(node.name)
    if seen != list(per_model):
        raise ModelError(
            f"float_convs: the exported graph has {seen} convolutions per model where the model "
            f"has {list(per_model)}, so the first {convs} cannot be found; export with "
            "float_convs=0"
        )
    return names


def _owners(nodes: Sequence[onnx.NodeProto]) -> list[set[int]]:
    """Per node, the ensemble members it computes for: the one its module scope names, and
    each member whose nodes it feeds (the exporter merges the identical leading layers of
    members with the same weights into one node); none for the averaging of their answers."""
    producer = {name: k for k, node in enumerate(nodes) for name in node.output}
    owners: list[set[int]] = [set() for _ in nodes]
    for k in reversed(range(len(nodes))):  # graph order: each node's consumers come after it
        member = member_of(nodes[k])
        if member is not None:
            owners[k].add(member)
        for name in nodes[k].input:
            if name in producer:
                owners[producer[name]] |= owners[k]
    return owners


_MEMBER_SCOPE = re.compile(r"(?:'|\.)(?:members|inputs)\.(\d+)(?:'|\.)")


def member_of(node: onnx.NodeProto) -> int | None:
    """The ensemble member a node of the exported graph computes for (from the module scopes
    the exporter records), or None for the averaging of their answers."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            match = _MEMBER_SCOPE.search(prop.value)
            return int(match.group(1)) if match else None
    return None


def _quantize_int8(
    fp32: Path,
    out: Path,
    bundle: ModelBundle,
    calibration: Sequence[ImageSource] | None,
    float_convs: int,
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(fp32, prepared)
    nodes = onnx.load(prepared).graph.node
    kept_float = _leading_nodes(nodes, float_convs, member_convolutions(bundle.model))
    if not calibration:
        if any(node.op_type == "Conv" for node in nodes):
            warnings.warn(
                "dynamic int8 convolutions run slower than fp32 on onnxruntime's CPU and lose "
                "accuracy; give calibration images (--calibration DIR) for static int8",
                stacklevel=3,
            )
        # onnxruntime's CPU ConvInteger takes uint8 weights only.
        quantize_dynamic(prepared, out, weight_type=QuantType.QUInt8, nodes_to_exclude=kept_float)
        return

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(bundle, calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    softmax = [node.name for node in nodes if node.op_type == "Softmax"]
    # onnxruntime prints its calibration steps; ferlab's commands print one line per result
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            prepared,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            # activation ranges at the 99.999th percentile: top-1 agreement with fp32 on FER2013
            # test 96.7%, against 95.5% with min-max ranges (MODEL_CARD.md recipe step 1's model)
            calibrate_method=CalibrationMethod.Percentile,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            # the probabilities and the leading layers kept float stay full precision
            nodes_to_exclude=softmax + kept_float,
        )


def calibration_batches(
    bundle: ModelBundle, images: Sequence[ImageSource], label: str = "calibrate"
) -> Iterator[np.ndarray]:
    """Model inputs of ``images``' face crops, in batches of one size (onnxruntime's percentile
    calibration stacks every batch's activations, so a shorter last batch would break it): the
    largest divisor of the image count up to 32."""
    size = max(
        d
        for d in range(1, min(_CALIBRATION_BATCH, max(len(images), 1)) + 1)
        if len(images) % d == 0
    )
    with bar(label, len(images), unit="images") as line:
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            yield bundle.spec.model_input(
                [bundle.spec.crop_tensor(load_image(image, rgb=True)) for image in chunk]
            )
            line.advance(len(chunk))


def cached_onnx(model_file: Path) -> Path:
    """The fp32 ONNX export of ``model_file``, made on first use in the ferlab cache folder."""
    digest = hashlib.sha256(f"{ONNX_FORMAT_VERSION}|{torch.__version__}|".encode())
    digest.update(model_file.read_bytes())
    out = default_cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    return out if out.is_file() else export_onnx(model_file, out)
