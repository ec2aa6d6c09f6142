"""Read the parameters of a network that dlib serialised (``dlib::serialize(net, out)``).

dlib writes a network from the input layer up; each layer record starts with its version string
(``con_4``, ``affine_``, ``fc_2``, ...). Integers are written as a byte count (the high bit set
for a negative value) followed by that many little-endian bytes; strings as their length and
bytes; tensors as ``version, num_samples, k, nr, nc`` and then little-endian float32 values.

Only the parameter tensors are read: ``con_`` layers (filters, then one bias per filter; the
filter count and size follow the tensor), ``affine_`` layers (per-channel scale, then shift) and
``fc_`` layers (a ``num_inputs x num_outputs`` matrix, its sizes before the tensor). Everything
else in the file (tags, pooling, ReLU, learning-rate multipliers) carries no weights and is
stepped over. The file is only parsed, never executed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferlab.errors import ModelError

__all__ = ["DlibLayer", "read_dlib_layers", "read_dlib_state"]

# a layer record's version string, with dlib's length prefix (one byte count, then the length)
_LAYER = re.compile(rb"\x01([\x04-\x07])(con_\d|affine_|fc_\d)")
_TENSOR_VERSION = 2


@dataclass(frozen=True)
class DlibLayer:
    """One parameter tensor of a dlib network: ``kind`` is ``con``, ``affine`` or ``fc``;
    ``values`` the floats, flat; ``sizes``: for ``con`` (filters, rows, columns) read after the
    tensor, for ``fc`` (outputs, inputs) read before it."""

    kind: str
    values: np.ndarray
    sizes: tuple[int, ...]


class _Cursor:
    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def fail(self, problem: str) -> ModelError:
        return ModelError(f"{self.where}: not a dlib network file ({problem} at byte {self.pos})")

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("file ends inside an integer")
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8 or self.pos + 1 + size > len(self.data):
            raise self.fail("bad integer")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def tensor(self) -> np.ndarray:
        if self.integer() != _TENSOR_VERSION:
            raise self.fail(f"tensor version other than {_TENSOR_VERSION}")
        shape = (self.integer(), self.integer(), self.integer(), self.integer())
        count = math.prod(shape)
        if min(shape) < 0:
            raise self.fail(f"bad tensor shape {shape}")
        end = self.pos + 4 * count
        if end > len(self.data):
            raise self.fail(f"file ends inside a tensor of {count} values")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).copy()
        self.pos = end
        return values


def read_dlib_layers(path: str | Path) -> list[DlibLayer]:
    """The parameter tensors of the dlib network in ``path``, input side first.

    ModelError naming the file where it cannot be read or is not a dlib network file.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelError(f"{file}: cannot read ({exc.strerror or exc})") from None
    cursor = _Cursor(data, str(file))
    layers: list[DlibLayer] = []
    while (match := _LAYER.search(data, cursor.pos)) is not None:
        name = match.group(2)
        if match.group(1)[0] != len(name):
            cursor.pos = match.start() + 1
            continue
        cursor.pos = match.end()
        kind = name.decode().split("_")[0]
        sizes = (cursor.integer(), cursor.integer()) if kind == "fc" else ()
        values = cursor.tensor()
        if kind == "con":
            sizes = (cursor.integer(), cursor.integer(), cursor.integer())
        layers.append(DlibLayer(kind, values, sizes))
    if not layers:
        raise ModelError(f"{file}: not a dlib network file (no layer with parameters found)")
    return layers


def _tensors(layer: DlibLayer, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of one layer in PyTorch's layout."""
    values = torch.from_numpy(layer.values)
    if layer.kind == "affine":
        if len(values) % 2:
            raise ModelError(f"{where}: an affine layer holds an odd number of values")
        scale, shift = values.chunk(2)
        return scale, shift
    if layer.kind == "fc":
        outputs, inputs = layer.sizes
        if outputs * inputs != len(values):
            raise ModelError(f"{where}: an fc layer of {inputs}x{outputs} holds {len(values)}")
        return values.view(inputs, outputs).t().contiguous(), None
    filters, rows, columns = layer.sizes
    per_filter = rows * columns * filters
    if filters <= 0 or per_filter <= 0 or (len(values) - filters) % per_filter:
        raise ModelError(
            f"{where}: a con layer of {filters} {rows}x{columns} filters holds {len(values)} values"
        )
    weight, bias = values.split([len(values) - filters, filters])
    return weight.view(filters, -1, rows, columns), bias


def read_dlib_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters of the dlib network in ``path`` as a state dict in PyTorch's layouts, keys
    numbered per kind in file order (input side first): ``con.0.weight`` ``(out, in, kh, kw)``,
    ``con.0.bias``, ``affine.0.weight`` (scale), ``affine.0.bias`` (shift), ``fc.0.weight``
    ``(out, in)``."""
    counts: dict[str, int] = {}
    state: dict[str, torch.Tensor] = {}
    for layer in read_dlib_layers(path):
        index = counts.get(layer.kind, 0)
        counts[layer.kind] = index + 1
        weight, bias = _tensors(layer, str(path))
        state[f"{layer.kind}.{index}.weight"] = weight
        if bias is not None:
            state[f"{layer.kind}.{index}.bias"] = bias
    return state
