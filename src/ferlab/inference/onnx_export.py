"""Export a ferlab model to a self-contained ONNX file, optionally int8, and run it on the CPU.

The graph maps normalised float32 (N, C, S, S) input, any N, to class probabilities (softmax
included), output ``probs``; for a valence/arousal model the one output is ``probs_va``, the
probabilities followed by valence and arousal (metadata ``va``: ``true``). The class names,
preprocessing and the training options evaluation needs travel in the file's ``metadata_props``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ferlab.cache_dir import default_cache_dir
from ferlab.errors import ConfigError, ModelError
from ferlab.inference.images import ImageSource, load_image
from ferlab.inference.preprocess import crop_tensor, decode_settings, model_input
from ferlab.models import bounds
from ferlab.models.artifact import (
    FLOAT_CONVS_KEY,
    ModelBundle,
    load_model_file,
    resolve_model_file,
)
from ferlab.models.registry import FERModel
from ferlab.progress import bar
from ferlab.tta_modes import tta_mode

ONNX_FORMAT = "ferlab-onnx"
ONNX_FORMAT_VERSION = 1
OPSET = 18
QUANTIZE_MODES = ("int8",)
_CALIBRATION_BATCH = 32
PRIOR_KEYS = ("class_prior", "prior_tau")  # model file meta an export carries for --prior-tau
# training options an export carries for evaluate / compare (class mapping, split, decoding)
EVALUATION_CONFIG_KEYS = (
    "keep",
    "rename",
    "merge",
    "val_fraction",
    "test_fraction",
    "seed",
    "image_size",
    "color",
)


def export_onnx(
    model_ref: str | Path,
    out: str | Path,
    quantize: str | None = None,
    *,
    calibration: Sequence[ImageSource] | None = None,
    float_convs: int | None = None,
) -> Path:
    """Write the model of a run folder or model file to ``out`` as ONNX; returns ``out``.

    ``quantize="int8"``: static QDQ quantization (per-channel weights, activation ranges measured
    on ``calibration``: face crops as paths, bytes, PIL images or RGB arrays) when calibration
    images are given, else dynamic quantization (activations quantized at run time).
    ``float_convs``: the graph's first convolutions, with the activations and sums between them,
    stay float (mixed precision for the layers most sensitive to int8); ``None``: the number the
    model file recommends (``int8_float_convs``), else 0.
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"quantize: unknown mode '{quantize}'; available: int8")
    if float_convs is not None and quantize is None:
        raise ConfigError("float_convs: only for int8 exports (quantize='int8')")
    if float_convs is not None and float_convs < 0:
        raise ConfigError(f"float_convs: must be 0 or more, got {float_convs}")
    bundle = load_model_file(resolve_model_file(model_ref))
    if float_convs is None:
        float_convs = int(bundle.meta.get(FLOAT_CONVS_KEY, 0))
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


class _ProbsAndVA(torch.nn.Module):
    """A valence/arousal model as one output: probabilities, then valence and arousal."""

    def __init__(self, model: FERModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, classes = self.model.outputs(x), self.model.num_classes
        return torch.cat([torch.softmax(outputs[:, :classes], dim=1), outputs[:, classes:]], dim=1)


def _output_name(va: bool) -> str:
    return "probs_va" if va else "probs"


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
        output_names=[_output_name(bundle.va)],
        opset_version=OPSET,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )


def _set_metadata(model: onnx.ModelProto, bundle: ModelBundle, float_convs: int | None) -> None:
    image_size, color = decode_settings(bundle.meta, bundle.prep)
    values = {
        "format": f"{ONNX_FORMAT}/{ONNX_FORMAT_VERSION}",
        "model": bundle.name,
        "classes": json.dumps(bundle.classes),
        "preprocessing": json.dumps(bundle.prep.to_dict()),
        "decode": json.dumps({"image_size": image_size, "color": color}),
        "va": json.dumps(bundle.va),
        "tta": json.dumps(tta_mode(bundle.meta.get("tta"))),
        "config": json.dumps(_split_config(bundle.meta.get("config", {}))),
    }
    for key in PRIOR_KEYS:
        if key in bundle.meta:
            values[key] = json.dumps(bundle.meta[key])
    if float_convs is not None:
        values["int8"] = json.dumps({"float_convs": float_convs})
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def _split_config(config: dict[str, Any]) -> dict[str, Any]:
    """The training options that evaluating the export needs: class mapping, split, decoding."""
    return {key: config[key] for key in EVALUATION_CONFIG_KEYS if config.get(key) is not None}


def _leading_nodes(nodes: Sequence[onnx.NodeProto], convs: int) -> list[str]:
    """Names of the nodes (in graph order) that come before the graph's ``convs + 1``-th Conv."""
    total = sum(node.op_type == "Conv" for node in nodes)
    if convs > total:
        raise ConfigError(f"float_convs: {convs}, but the model has {total} convolutions")
    if convs == 0:
        return []
    names: list[str] = []
    seen = 0
    for node in nodes:
        if node.op_type == "Conv":
            if seen == convs:
                break
            seen += 1
        names.append(node.name)
    return names


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
    kept_float = _leading_nodes(nodes, float_convs)
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
    """Model inputs of ``images``' face crops, a batch at a time."""
    image_size, color = decode_settings(bundle.meta, bundle.prep)
    with bar(label, len(images), unit="images") as line:
        for start in range(0, len(images), _CALIBRATION_BATCH):
            chunk = images[start : start + _CALIBRATION_BATCH]
            crops = [crop_tensor(load_image(image, rgb=True), image_size, color) for image in chunk]
            yield model_input(crops, bundle.prep)
            line.advance(len(chunk))


def cached_onnx(model_file: Path) -> Path:
    """The fp32 ONNX export of ``model_file``, made on first use in the ferlab cache folder."""
    digest = hashlib.sha256(f"{ONNX_FORMAT_VERSION}|{torch.__version__}|".encode())
    digest.update(model_file.read_bytes())
    out = default_cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    return out if out.is_file() else export_onnx(model_file, out)


class OnnxModel:
    """An exported model on onnxruntime's CPU provider: normalised (N, C, S, S) → probabilities."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # Threads that spin after a run took the CPU from the face detector's threads, which ran
        # at half speed between model calls (42 ms against 19 ms per 640x480 frame here).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable files
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"{self.path}: not a readable ONNX model ({first})") from None
        self._read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self._check_graph()
        self._warned_logits = False

    def _read_metadata(self, meta: dict[str, str]) -> None:
        """Names, preprocessing and options from the metadata, each checked against its bounds."""
        file = self.path
        kind, _, version = meta.get("format", "").partition("/")
        if kind != ONNX_FORMAT:
            raise ModelError(f"{file}: not a ferlab ONNX export (made with 'ferlab export')")
        if _number(file, version) > ONNX_FORMAT_VERSION:
            raise ModelError(f"{file}: written by a newer ferlab (format {version})")
        missing = sorted({"model", "classes", "preprocessing", "decode"} - set(meta))
        if missing:
            raise ModelError(f"{file}: metadata lacks {', '.join(missing)}")
        decode = bounds.checked_mapping(file, "decode", _json(file, meta, "decode"))
        self.name = bounds.checked_text(file, "model", meta["model"])
        self.classes = bounds.checked_classes(file, _json(file, meta, "classes"))
        self.prep = bounds.checked_preprocessing(file, _json(file, meta, "preprocessing"))
        self.image_size, self.color = bounds.checked_decode(
            file, decode.get("image_size"), decode.get("color"), "decode"
        )
        self.default_tta = tta_mode(bounds.checked_tta(file, _json(file, meta, "tta", "false")))
        self.va = bounds.checked_bool(file, "va", _json(file, meta, "va", "false"))
        self.meta: dict[str, Any] = {
            "config": bounds.checked_config(file, _json(file, meta, "config", "{}")),
            "tta": self.default_tta,
        }
        if "int8" in meta:
            int8 = bounds.checked_mapping(file, "int8", _json(file, meta, "int8"))
            bounds.checked_float_convs(file, int8.get("float_convs", 0))
            self.meta["int8"] = int8
        for key in PRIOR_KEYS:
            if key in meta:
                self.meta[key] = _json(file, meta, key)

    def _check_graph(self) -> None:
        """The graph's input and output shapes agree with the metadata."""
        inputs = {graph_in.name: graph_in.shape for graph_in in self.session.get_inputs()}
        expected = [None, self.prep.in_channels, self.prep.input_size, self.prep.input_size]
        shape = inputs.get("input")
        if shape is None or len(shape) != 4 or not _fits(shape, expected):
            raise ModelError(
                f"{self.path}: the graph's input is {shape}, the metadata says {expected[1:]}"
            )
        outputs = {output.name: output.shape for output in self.session.get_outputs()}
        width = len(self.classes) + 2 * self.va
        shape = outputs.get(_output_name(self.va))
        if shape is None or len(shape) != 2 or not _fits(shape, [None, width]):
            raise ModelError(
                f"{self.path}: the graph has no output '{_output_name(self.va)}' of "
                f"{width} values per image"
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and, for a ``va`` export, valence and arousal (N, 2)."""
        feed = {"input": np.ascontiguousarray(batch, np.float32)}
        output = self.session.run([_output_name(self.va)], feed)[0]
        classes = len(self.classes)
        probs = self._probabilities(output[:, :classes])
        return probs, output[:, classes:] if self.va else None

    def _probabilities(self, output: np.ndarray) -> np.ndarray:
        """``output`` itself where it holds probabilities; logits get a softmax (and a warning)."""
        if not np.isfinite(output).all():
            raise ModelError(f"{self.path}: the model output NaN or infinite values")
        if output.size == 0 or (
            output.min() >= 0 and np.allclose(output.sum(axis=1), 1.0, atol=1e-3)
        ):
            return output
        if not self._warned_logits:
            warnings.warn(
                f"{self.path}: outputs are not probabilities; applying softmax", stacklevel=3
            )
            self._warned_logits = True
        shifted = np.exp(output - output.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def _json(file: Path, meta: dict[str, str], key: str, default: str | None = None) -> Any:
    """Metadata value ``key`` parsed as JSON, or a ModelError naming the file and key."""
    text = meta.get(key, default)
    try:
        return json.loads(text) if text is not None else None
    except (json.JSONDecodeError, RecursionError):
        raise ModelError(f"{file}: metadata {key}: not valid JSON") from None


def _fits(shape: Sequence[Any], expected: Sequence[int | None]) -> bool:
    """Whether the fixed dimensions of a graph shape equal those expected (None: any)."""
    return all(
        want is None or not isinstance(dim, int) or dim == want
        for dim, want in zip(shape, expected, strict=True)
    )


def _number(file: Path, text: str) -> int:
    """The format version after ``ferlab-onnx/``."""
    if not (text.isascii() and text.isdigit() and len(text) < 10):
        raise ModelError(f"{file}: format: expected a version number, got {text[:40]!r}")
    return int(text)
