"""Read a TensorFlow Lite model without TensorFlow: a minimal flatbuffer reader.

Only what the microWakeWord interpreter (:mod:`edge.wake.micro.graph`) needs: the main
subgraph's tensors (shape, type, constant data, int8 quantization), its operators (builtin
code, inputs, outputs and options table) and its inputs and outputs. The schema fields
read (tensorflow/lite/schema/schema.fbs) are Model: operator_codes (1), subgraphs (2),
buffers (4); OperatorCode: deprecated_builtin_code (0), builtin_code (3); SubGraph:
tensors (0), inputs (1), outputs (2), operators (3); Tensor: shape (0), type (1),
buffer (2), name (3), quantization (4); QuantizationParameters: scale (2), zero_point (3),
quantized_dimension (6); Operator: opcode_index (0), inputs (1), outputs (2),
builtin_options (4); Buffer: data (0).

A flatbuffer table starts with a signed offset back to its vtable, whose uint16 entries
give each field's offset in the table (0: absent, the schema default applies). Offsets
to tables, vectors and strings are uint32, relative to where they are stored.

>>> model = read_tflite(path)  # doctest: +SKIP
>>> [op.code for op in model.operators][:2]  # doctest: +SKIP
['CALL_ONCE', 'VAR_HANDLE']
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUILTIN_OPS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 40: "MEAN", 43: "SQUEEZE",
    45: "STRIDED_SLICE", 49: "SPLIT", 102: "SPLIT_V", 114: "QUANTIZE", 129: "CALL_ONCE",
    142: "VAR_HANDLE", 143: "READ_VARIABLE", 144: "ASSIGN_VARIABLE",
}
"""TFLite builtin operator codes (BuiltinOperator in schema.fbs) this reader can name."""

TENSOR_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8,
                7: np.int16}
"""TensorType codes to numpy dtypes (FLOAT32, INT32, UINT8, INT64, INT16, INT8)."""
MAX_ELEMENTS = 1 << 22
"""No tensor of a wake-word model comes near this many values; a file claiming one is bad."""
RESOURCE = 13
"""TensorType RESOURCE: a variable handle (the streaming state)."""


class FlatbufferError(ValueError):
    """The file is not a well-formed TFLite flatbuffer."""


class _Table:
    """One flatbuffer table: fields by index, bounds-checked."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vt = pos - self._i32(pos)
        self.vt_len = self._u16(self.vt)

    def _check(self, pos: int, n: int) -> None:
        if pos < 0 or pos + n > len(self.buf):
            raise FlatbufferError(f"offset {pos} is outside the file ({len(self.buf)} bytes)")

    def _u16(self, pos: int) -> int:
        self._check(pos, 2)
        return int(struct.unpack_from("<H", self.buf, pos)[0])

    def _i32(self, pos: int) -> int:
        self._check(pos, 4)
        return int(struct.unpack_from("<i", self.buf, pos)[0])

    def _u32(self, pos: int) -> int:
        self._check(pos, 4)
        return int(struct.unpack_from("<I", self.buf, pos)[0])

    def field(self, index: int) -> int:
        """Absolute position of a field's value, or 0 when absent."""
        entry = 4 + 2 * index
        if entry >= self.vt_len:
            return 0
        off = self._u16(self.vt + entry)
        return self.pos + off if off else 0

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        p = self.field(index)
        if not p:
            return default
        self._check(p, struct.calcsize(fmt))
        value: int | float = struct.unpack_from("<" + fmt, self.buf, p)[0]
        return value

    def _deref(self, index: int) -> int:
        p = self.field(index)
        return p + self._u32(p) if p else 0

    def table(self, index: int) -> _Table | None:
        p = self._deref(index)
        return _Table(self.buf, p) if p else None

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        p = self._deref(index)
        if not p:
            return 0, 0
        return p + 4, self._u32(p)

    def tables(self, index: int) -> list[_Table]:
        start, n = self.vector(index)
        self._check(start, 4 * n)
        return [_Table(self.buf, start + 4 * i + self._u32(start + 4 * i)) for i in range(n)]

    def array(self, index: int, dtype: type) -> np.ndarray:
        start, n = self.vector(index)
        size = np.dtype(dtype).itemsize
        self._check(start, n * size)
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"),
                             count=n, offset=start) if n else np.zeros(0, dtype=dtype)

    def string(self, index: int) -> str:
        start, n = self.vector(index)
        self._check(start, n)
        return self.buf[start:start + n].decode("utf-8", "replace")


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph; ``data`` holds a constant's values, else None."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type | None
    """numpy dtype, or None for a resource (variable handle)."""
    data: np.ndarray | None
    scale: np.ndarray
    """Quantization scale: one per tensor, or one per channel along ``quant_dim``."""
    zero_point: np.ndarray
    quant_dim: int


@dataclass(frozen=True)
class Operator:
    code: str
    """Builtin operator name (``CONV_2D``, ...), or ``BUILTIN_<n>`` for one unnamed here."""
    inputs: tuple[int, ...]
    """Tensor indices; -1 for an optional input left out."""
    outputs: tuple[int, ...]
    options: _Table | None
    """The builtin options table, read by the operator's kernel."""


@dataclass(frozen=True)
class TfliteModel:
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: tuple[tuple[Operator, ...], ...]
    """Operators of every subgraph (CALL_ONCE runs an initialisation subgraph)."""
    subgraph_tensors: tuple[tuple[Tensor, ...], ...]


def _tensors(sub: _Table, buffers: list[_Table]) -> tuple[Tensor, ...]:
    out = []
    for i, t in enumerate(sub.tables(0)):
        ttype = int(t.scalar(1, "b"))
        dtype = None if ttype == RESOURCE else TENSOR_TYPES.get(ttype)
        if ttype != RESOURCE and dtype is None:
            raise FlatbufferError(f"tensor {i} has the unsupported type code {ttype}")
        shape = tuple(int(d) for d in t.array(0, np.int32))
        if any(d < 0 for d in shape) or np.prod(shape, dtype=np.float64) > MAX_ELEMENTS:
            raise FlatbufferError(f"tensor {i} has the shape {list(shape)}")
        b = int(t.scalar(2, "I"))
        data = None
        if 0 < b < len(buffers) and dtype is not None:
            raw = buffers[b].array(0, np.uint8)
            if raw.size:
                data = raw.view(np.dtype(dtype).newbyteorder("<")).astype(dtype)
                if data.size != int(np.prod(shape)):
                    raise FlatbufferError(f"tensor {i} has {data.size} values for shape {shape}")
                data = data.reshape(shape)
        q = t.table(4)
        scale = q.array(2, np.float32).astype(np.float32) if q else np.zeros(0, np.float32)
        zero = q.array(3, np.int64).astype(np.int64) if q else np.zeros(0, np.int64)
        qdim = int(q.scalar(6, "i")) if q else 0
        out.append(Tensor(i, t.string(3), shape, dtype, data, scale, zero, qdim))
    return tuple(out)


def _operators(sub: _Table, codes: list[str]) -> tuple[Operator, ...]:
    ops = []
    for o in sub.tables(3):
        idx = int(o.scalar(0, "I"))
        if idx >= len(codes):
            raise FlatbufferError(f"operator code index {idx} is out of range")
        ops.append(Operator(codes[idx], tuple(int(x) for x in o.array(1, np.int32)),
                            tuple(int(x) for x in o.array(2, np.int32)), o.table(4)))
    return tuple(ops)


def parse_tflite(buf: bytes) -> TfliteModel:
    """The model in ``buf``; :class:`FlatbufferError` if it is not a TFLite flatbuffer."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise FlatbufferError("not a TensorFlow Lite file (no TFL3 identifier)")
    try:
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        codes = []
        for c in root.tables(1):
            code = max(int(c.scalar(0, "b")), int(c.scalar(3, "i")))
            codes.append(BUILTIN_OPS.get(code, f"BUILTIN_{code}"))
        buffers = root.tables(4)
        subs = root.tables(2)
        if not subs:
            raise FlatbufferError("the model has no subgraph")
        tensors = tuple(_tensors(s, buffers) for s in subs)
        operators = tuple(_operators(s, codes) for s in subs)
        main = subs[0]
        return TfliteModel(tensors[0], operators[0],
                           tuple(int(x) for x in main.array(1, np.int32)),
                           tuple(int(x) for x in main.array(2, np.int32)),
                           operators, tensors)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise FlatbufferError(f"malformed flatbuffer: {exc}") from exc


def read_tflite(path: Path) -> TfliteModel:
    return parse_tflite(path.read_bytes())
