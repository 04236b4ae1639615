"""Read an ONNX model's graph without the ``onnx`` package: a minimal protobuf reader.

Only what the streamed embedding (:mod:`edge.wake.embedding`) needs: the nodes of the
graph and its float32/int64 initializers. The fields read are ModelProto.graph (7) ->
GraphProto.node (1), .initializer (5) and .output (12, ValueInfoProto name 1); NodeProto
input (1), output (2), op_type (4), attribute (5); AttributeProto name (1), f (2), i (3),
s (4), t (5, a tensor: a Constant's value), g (6, a subgraph: an If's branches), floats (7),
ints (8); TensorProto dims (1), data_type (2), float_data (4), int32_data (5), int64_data
(7), name (8), raw_data (9), data_location (14).

>>> inits, nodes = read_onnx(path)
>>> [n.op for n in nodes][:2]
['Reshape', 'Conv']
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError

_Value = int | memoryview


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad protobuf varint")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, _Value]]:
    """(field number, wire type, value) of one message; length-delimited values as views."""
    pos, end = 0, len(buf)
    while pos < end:
        key = buf[pos]  # one byte, as almost every key and length here: no call
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
            continue
        if wire == 2:
            n = buf[pos]
            if n < 0x80:
                pos += 1
            else:
                n, pos = _varint(buf, pos)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos + n > end:
            raise ValueError("truncated protobuf message")
        yield field, wire, buf[pos:pos + n]
        pos += n


def _view(value: _Value) -> memoryview:
    if isinstance(value, int):
        raise ValueError("protobuf field has the wrong wire type")
    return value


def _str(value: _Value) -> str:
    return bytes(_view(value)).decode()


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(value: _Value) -> list[int]:
    """A repeated int64 field, packed or not."""
    if isinstance(value, int):
        return [_int64(value)]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_int64(v))
    return out


_DTYPES = {1: "<f4", 6: "<i4", 7: "<i8", 9: "?", 11: "<f8"}
"""TensorProto data types read: float, int32, int64, bool, double."""


def _tensor(buf: memoryview) -> tuple[str, np.ndarray | None]:
    """TensorProto -> (name, array); float32/64, int32/64 and bool tensors only, else None."""
    name, dims, dtype = "", [], 0
    raw: memoryview | None = None
    floats = b""
    int64s: list[int] = []
    int32s: list[int] = []
    for field, _, value in _fields(buf):
        if field == 1:
            dims += _ints(value)
        elif field == 2 and isinstance(value, int):
            dtype = value
        elif field == 4:
            floats += bytes(_view(value))  # packed or one fixed32: little-endian floats
        elif field == 5:
            int32s += _ints(value)
        elif field == 7:
            int64s += _ints(value)
        elif field == 8:
            name = _str(value)
        elif field == 9:
            raw = _view(value)  # copied once, below
        elif field == 14 and value == 1:
            raise ValueError(f"tensor {name or '?'} keeps its data in an external file")
    if dtype not in _DTYPES:
        return name, None
    if raw is not None:
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype])
    elif dtype == 1:
        arr = np.frombuffer(floats, dtype="<f4")
    elif dtype == 7:
        arr = np.array(int64s, "<i8")
    elif dtype == 11:
        return name, None  # double_data (10) is not read; the models store raw_data
    else:  # int32 and bool travel in int32_data
        arr = np.array(int32s, "<i4").astype(_DTYPES[dtype])
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"tensor {name} has {arr.size} values for dims {dims}")
    return name, arr.astype(arr.dtype.newbyteorder("="), copy=True).reshape(dims)


@dataclass
class Graph:
    """A graph: its float32/int64 (and int32, bool) initializers, nodes and output names."""

    inits: dict[str, np.ndarray]
    nodes: list[Node]
    outputs: list[str]
    inputs: dict[str, list[int | None]] = dataclasses.field(default_factory=dict)
    """The graph's inputs that are not initializers, with their shapes (None: a named dim)."""
    output_shapes: list[list[int | None]] = dataclasses.field(default_factory=list)


Attr = float | int | bytes | list[int] | list[float] | np.ndarray | Graph
"""An attribute value: a float, int, string, ints, floats, a tensor or a subgraph."""


@dataclass
class Node:
    """One node of the graph: its operator, input and output names, and attributes."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Attr]


def _node(buf: memoryview) -> Node:
    node = Node("", [], [], {})
    for field, _, value in _fields(buf):
        if field == 1:
            node.inputs.append(_str(value))
        elif field == 2:
            node.outputs.append(_str(value))
        elif field == 4:
            node.op = _str(value)
        elif field == 5:
            name, attr = "", None
            ints: list[int] = []
            floats: list[float] = []
            for f, _, v in _fields(_view(value)):
                if f == 1:
                    name = _str(v)
                elif f == 2:
                    attr = struct.unpack("<f", _view(v))[0]
                elif f == 3 and isinstance(v, int):
                    attr = _int64(v)
                elif f == 4:
                    attr = bytes(_view(v))
                elif f == 5:
                    attr = _tensor(_view(v))[1]
                elif f == 6:
                    attr = _graph(_view(v))
                elif f == 7:
                    b = bytes(_view(v))
                    floats += list(struct.unpack(f"<{len(b) // 4}f", b))
                elif f == 8:
                    ints += _ints(v)
            node.attrs[name] = attr if attr is not None else floats if floats else ints
    return node


def read_onnx(path: Path) -> tuple[dict[str, np.ndarray], list[Node]]:
    """The float32/int64 initializers and the nodes of an ONNX model's graph, without ``onnx``.

    Raises ValueError (or OSError) when the file is not such a model.
    """
    g = read_graph(path)
    return g.inits, g.nodes


def load_graph(path: Path) -> Graph:
    """:func:`read_graph`, refusing a file that is not such a model with a ModelError."""
    try:
        return read_graph(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from exc


def read_graph(path: Path) -> Graph:
    """The main graph of an ONNX model, subgraphs (an If's branches) included.

    Raises ValueError (or OSError) when the file is not such a model.
    """
    data = memoryview(path.read_bytes())
    try:
        graph = None
        for field, _, value in _fields(data):
            if field == 7:
                graph = _view(value)
        if graph is None:
            raise ValueError("no graph in the model")
        return _graph(graph)
    except (IndexError, struct.error) as exc:  # a truncated field or a short float
        raise ValueError(f"malformed protobuf: {exc}") from exc


def _graph(graph: memoryview) -> Graph:
    inits: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    outputs: list[str] = []
    inputs: dict[str, list[int | None]] = {}
    output_shapes: list[list[int | None]] = []
    for field, _, value in _fields(graph):
        if field == 1:
            nodes.append(_node(_view(value)))
        elif field == 5:
            name, arr = _tensor(_view(value))
            if arr is not None:
                inits[name] = arr
        elif field == 11:
            name, shape = _value_info(_view(value))
            inputs[name] = shape
        elif field == 12:
            name, shape = _value_info(_view(value))
            outputs.append(name)
            output_shapes.append(shape)
    return Graph(inits, nodes, outputs, {k: v for k, v in inputs.items() if k not in inits},
                 output_shapes)


def _value_info(buf: memoryview) -> tuple[str, list[int | None]]:
    """ValueInfoProto name (1) and type (2) -> TypeProto.tensor_type (1) -> shape (2) ->
    dim (1) -> dim_value (1) (a dim_param or a missing value reads as None)."""
    name, shape = "", []
    for f, _, v in _fields(buf):
        if f == 1:
            name = _str(v)
        elif f == 2:
            for tf, _, tv in _fields(_view(v)):
                if tf != 1:
                    continue
                for sf, _, sv in _fields(_view(tv)):
                    if sf != 2:
                        continue
                    for df, _, dv in _fields(_view(sv)):
                        if df == 1:
                            dims = [x for k, _, x in _fields(_view(dv)) if k == 1]
                            shape.append(dims[0] if dims and isinstance(dims[0], int) else None)
    return name, shape
