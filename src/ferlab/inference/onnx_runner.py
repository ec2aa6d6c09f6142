"""An exported model on onnxruntime's CPU provider, its metadata checked before use.

The graph (see :mod:`ferlab.inference.onnx_export`) maps normalised float32 (N, C, S, S) input to
class probabilities, output ``probs``, or for a valence/arousal model ``probs_va``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferlab.errors import ModelError, os_error_line
from ferlab.inference.runner import ModelRunner
from ferlab.models import bounds
from ferlab.models.spec import ModelSpec, legacy_spec

ONNX_FORMAT = "ferlab-onnx"
ONNX_FORMAT_VERSION = 2  # 2: the contract in metadata "spec"; 1: spread over several keys


def output_name(va: bool) -> str:
    return "probs_va" if va else "probs"


class OnnxModel(ModelRunner):
    """An exported model on onnxruntime's CPU provider: normalised (N, C, S, S) → probabilities."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = self.source = Path(path)
        self.threads = threads
        _check_readable(self.path)
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
        self.spec.check_prior(self.path)
        self._warned_logits = False

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for worker processes) as its file: the session is opened again on load."""
        return {"path": self.path, "source": self.source, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], threads=state["threads"])  # type: ignore[misc]
        self.source = state["source"]

    def _read_metadata(self, meta: dict[str, str]) -> None:
        """The contract (format 2: ``spec``; format 1: the keys it was spread over) and the int8
        options, each value checked against its bounds."""
        file = self.path
        kind, _, version = meta.get("format", "").partition("/")
        if kind != ONNX_FORMAT:
            raise ModelError(f"{file}: not a ferlab ONNX export (made with 'ferlab export')")
        number = _number(file, version)
        if number > ONNX_FORMAT_VERSION:
            raise ModelError(f"{file}: written by a newer ferlab (format {version})")
        if number >= 2:
            if "spec" not in meta:
                raise ModelError(f"{file}: metadata lacks spec")
            self.spec = ModelSpec.from_dict(file, _json(file, meta, "spec"))
        else:
            self.spec = _format1_spec(file, meta)
        if "int8" in meta:
            int8 = bounds.checked_mapping(file, "int8", _json(file, meta, "int8"))
            bounds.checked_float_convs(file, int8.get("float_convs", 0))
            self.int8 = True

    def _check_graph(self) -> None:
        """The graph's input (float32) and output shapes agree with the metadata."""
        inputs = {graph_in.name: graph_in for graph_in in self.session.get_inputs()}
        expected = [None, self.prep.in_channels, self.prep.input_size, self.prep.input_size]
        graph_in = inputs.get("input")
        shape = None if graph_in is None else graph_in.shape
        if shape is None or len(shape) != 4 or not _fits(shape, expected):
            raise ModelError(
                f"{self.path}: the graph's input is {shape}, the metadata says {expected[1:]}"
            )
        if graph_in.type != "tensor(float)":
            raise ModelError(f"{self.path}: the graph's input is {graph_in.type}, expected float32")
        outputs = {output.name: output.shape for output in self.session.get_outputs()}
        width = len(self.classes) + 2 * self.va
        shape = outputs.get(output_name(self.va))
        if shape is None or len(shape) != 2 or not _fits(shape, [None, width]):
            raise ModelError(
                f"{self.path}: the graph has no output '{output_name(self.va)}' of "
                f"{width} values per image"
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and, for a ``va`` export, valence and arousal (N, 2)."""
        feed = {"input": self.checked_batch(batch)}
        output = self.session.run([output_name(self.va)], feed)[0]
        self._check_output(output, len(feed["input"]))
        classes = len(self.classes)
        probs = self._probabilities(output[:, :classes])
        return probs, output[:, classes:] if self.va else None

    def _check_output(self, output: np.ndarray, rows: int) -> None:
        """One row per image of one value per class (and valence, arousal for ``va``)."""
        width = len(self.classes) + 2 * self.va
        if output.ndim != 2:
            raise ModelError(
                f"{self.path}: the model returned shape {output.shape}, expected ({rows}, {width})"
            )
        if output.shape[0] != rows:
            raise ModelError(
                f"{self.path}: the model returned {output.shape[0]} row(s) for {rows} image(s)"
            )
        if output.shape[1] != width:
            raise ModelError(
                f"{self.path}: the model returned {output.shape[1]} values per image, the "
                f"metadata says {width}"
            )

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


def _check_readable(path: Path) -> None:
    """A ModelError saying why ``path`` cannot be opened (``x.onnx: permission denied``)."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ModelError(os_error_line(exc, path)) from None


def _format1_spec(file: Path, meta: dict[str, str]) -> ModelSpec:
    """The contract of a format-1 export: model, classes, preprocessing, decode, va, tta, config
    and the prior keys."""
    missing = sorted({"model", "classes", "preprocessing", "decode"} - set(meta))
    if missing:
        raise ModelError(f"{file}: metadata lacks {', '.join(missing)}")
    options = {key: _json(file, meta, key) for key in ("tta", "class_prior", "prior_tau")}
    return legacy_spec(
        file,
        name=meta["model"],
        classes=_json(file, meta, "classes"),
        preprocessing=_json(file, meta, "preprocessing"),
        va=_json(file, meta, "va", "false"),
        meta={"config": _json(file, meta, "config", "{}"), **options},
        decode=bounds.checked_mapping(file, "decode", _json(file, meta, "decode")),
    )


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
