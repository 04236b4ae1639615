"""openWakeWord's embedding model, computed incrementally with numpy.

The embedding model (Google's speech_embedding, as openWakeWord 0.5.1 ships it in
``embedding_model.onnx``) maps a window of 76 mel rows x 32 bins to one 96-d
vector. It is 20 convolutions (3x3, 1x3 and 3x1; "valid" in time, padded by one in
frequency), each followed by a bias, LeakyRelu(0.2) and ``max(x, -0.4)``, with four
max-pools that halve time (2x2) or frequency (1x2). The time stride of the whole
net is 8 mel rows, which is exactly one 80 ms frame, and every time pooling stays
aligned from one window to the next. So when the window moves on by 8 rows, every
layer's output simply gains its newest rows: a layer with a 3-row time kernel only
needs the last 2 rows of its input from before, everything else is row-local.

:class:`StreamingEmbedding` keeps those 2-row contexts and computes only the new
rows, about 7.5 times less arithmetic than running the model over the whole
window each frame. The result equals onnxruntime's to float32 rounding (summation
order differs; the difference is around 1e-6).

The weights are read straight from the ONNX file with a tiny protobuf reader, so
the ``onnx`` package is not needed. The graph is checked node by node against the
architecture this code implements; anything else raises :class:`ModelError` and
the caller keeps using onnxruntime.

>>> emb = StreamingEmbedding.load(path)
>>> first = emb.prime(mel[-76:])      # (96,), after a reset or a gap
>>> more = emb.step(mel[-8:])         # (1, 96) for each further 8 mel rows
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError

WINDOW = 76
"""Mel rows of one full window."""
BINS = 32
STEP = 8
"""Mel rows per embedding: the model's total time stride."""
DIM = 96
ALPHA = np.float32(0.2)
FLOOR = np.float32(-0.4)
"""The constant of the graph's ``Max`` after every LeakyRelu: a floor at -0.4."""

# The architecture: ("conv", name, (cout, cin, kt, kf), activated) or ("pool", kt, kf).
_ARCH: tuple[tuple[object, ...], ...] = (
    ("conv", "conv2d", (24, 1, 3, 3), True),
    ("conv", "conv2d_1", (24, 24, 1, 3), True),
    ("conv", "conv2d_2", (24, 24, 3, 1), True),
    ("pool", 2, 2),
    ("conv", "conv2d_3", (48, 24, 1, 3), True),
    ("conv", "conv2d_4", (48, 48, 3, 1), True),
    ("conv", "conv2d_5", (48, 48, 1, 3), True),
    ("conv", "conv2d_6", (48, 48, 3, 1), True),
    ("pool", 1, 2),
    ("conv", "conv2d_7", (72, 48, 1, 3), True),
    ("conv", "conv2d_8", (72, 72, 3, 1), True),
    ("conv", "conv2d_9", (72, 72, 1, 3), True),
    ("conv", "conv2d_10", (72, 72, 3, 1), True),
    ("pool", 2, 2),
    ("conv", "conv2d_11", (96, 72, 1, 3), True),
    ("conv", "conv2d_12", (96, 96, 3, 1), True),
    ("conv", "conv2d_13", (96, 96, 1, 3), True),
    ("conv", "conv2d_14", (96, 96, 3, 1), True),
    ("pool", 1, 2),
    ("conv", "conv2d_15", (96, 96, 1, 3), True),
    ("conv", "conv2d_16", (96, 96, 3, 1), True),
    ("conv", "conv2d_17", (96, 96, 1, 3), True),
    ("conv", "conv2d_18", (96, 96, 3, 1), True),
    ("pool", 2, 2),
    ("conv", "conv2d_19", (96, 96, 3, 1), False),
)


# --- a minimal protobuf reader for ONNX ModelProto ---------------------------------

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message; length-delimited values as views."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire == 2:
            n, pos = _varint(buf, pos)
            yield field, wire, buf[pos:pos + n]
            pos += n
        elif wire == 5:
            yield field, wire, buf[pos:pos + 4]
            pos += 4
        elif wire == 1:
            yield field, wire, buf[pos:pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wire: int, value: int | memoryview) -> list[int]:
    """A repeated int64 field, packed or not."""
    if wire == 0:
        assert isinstance(value, int)
        return [_int64(value)]
    assert isinstance(value, memoryview)
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_int64(v))
    return out


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    """TensorProto -> (name, array); float32 and int64 only, raw or typed data."""
    name, dims, dtype = "", [], 0
    raw: bytes | None = None
    floats: list[float] = []
    int64s: list[int] = []
    for field, wire, value in _fields(buf):
        if field == 1:
            dims += _ints(wire, value)
        elif field == 2:
            assert isinstance(value, int)
            dtype = value
        elif field == 4:
            assert isinstance(value, memoryview)
            floats += struct.unpack(f"<{len(value) // 4}f", value) if wire == 2 else \
                struct.unpack("<f", value)
        elif field == 7:
            int64s += _ints(wire, value)
        elif field == 8:
            assert isinstance(value, memoryview)
            name = bytes(value).decode()
        elif field == 9:
            assert isinstance(value, memoryview)
            raw = bytes(value)
        elif field == 14 and value == 1:
            raise ValueError(f"tensor {name or '?'} keeps its data in an external file")
    if dtype == 1:
        arr = np.frombuffer(raw, dtype="<f4") if raw is not None else np.array(floats, "<f4")
    elif dtype == 7:
        arr = np.frombuffer(raw, dtype="<i8") if raw is not None else np.array(int64s, "<i8")
    else:
        return name, np.zeros(0)
    return name, arr.astype(arr.dtype.newbyteorder("="), copy=True).reshape(dims)


@dataclass
class _Node:
    op: str
    inputs: list[str]
    attrs: dict[str, float | int | list[int]]


def _node(buf: memoryview) -> _Node:
    node = _Node("", [], {})
    for field, _, value in _fields(buf):
        if field == 1:
            assert isinstance(value, memoryview)
            node.inputs.append(bytes(value).decode())
        elif field == 4:
            assert isinstance(value, memoryview)
            node.op = bytes(value).decode()
        elif field == 5:
            assert isinstance(value, memoryview)
            aname, aval = "", None
            for f2, w2, v2 in _fields(value):
                if f2 == 1:
                    assert isinstance(v2, memoryview)
                    aname = bytes(v2).decode()
                elif f2 == 2:
                    assert isinstance(v2, memoryview)
                    aval = struct.unpack("<f", v2)[0]
                elif f2 == 3:
                    assert isinstance(v2, int)
                    aval = _int64(v2)
                elif f2 == 8:
                    aval = (aval if isinstance(aval, list) else []) + _ints(w2, v2)
            if aval is not None:
                node.attrs[aname] = aval
    return node


def read_onnx(path: Path) -> tuple[dict[str, np.ndarray], list[_Node]]:
    """The initializers and nodes of an ONNX model's main graph, without ``onnx``."""
    data = memoryview(path.read_bytes())
    graph = None
    for field, _, value in _fields(data):
        if field == 7:
            graph = value
    if not isinstance(graph, memoryview):
        raise ValueError("no graph in the model")
    inits: dict[str, np.ndarray] = {}
    nodes: list[_Node] = []
    for field, _, value in _fields(graph):
        assert field not in (1, 5) or isinstance(value, memoryview)
        if field == 1 and isinstance(value, memoryview):
            nodes.append(_node(value))
        elif field == 5 and isinstance(value, memoryview):
            name, arr = _tensor(value)
            inits[name] = arr
    return inits, nodes


# --- the network -------------------------------------------------------------------

@dataclass
class _Conv:
    kt: int
    kf: int
    w: np.ndarray
    """(kt * kf * cin, cout), rows ordered (time tap, freq tap, input channel)."""
    b: np.ndarray | None
    act: bool


@dataclass
class _Pool:
    kt: int
    kf: int


def _parse(path: Path) -> list[_Conv | _Pool]:
    """The layers of the embedding model, checked against :data:`_ARCH`."""
    try:
        inits, nodes = read_onnx(path)
    except (OSError, ValueError, IndexError, struct.error) as exc:
        raise ModelError(f"cannot read the embedding model {path}: {exc}") from exc

    def fail(what: str) -> ModelError:
        return ModelError(f"embedding model {path.name} is not the expected architecture: {what}")

    ops = [n for n in nodes if n.op != "Reshape"]
    layers: list[_Conv | _Pool] = []
    i = 0
    for spec in _ARCH:
        if spec[0] == "pool":
            kt, kf = int(spec[1]), int(spec[2])  # type: ignore[call-overload]
            n = ops[i] if i < len(ops) else None
            if n is None or n.op != "MaxPool" or n.attrs.get("kernel_shape") != [kt, kf] \
                    or n.attrs.get("strides") != [kt, kf] \
                    or any(n.attrs.get("pads", [0]) or [0]):
                raise fail(f"node {i} should be MaxPool {kt}x{kf}")
            layers.append(_Pool(kt, kf))
            i += 1
            continue
        _, name, shape, act = spec
        cout, cin, kt, kf = shape  # type: ignore[misc]
        n = ops[i] if i < len(ops) else None
        if n is None or n.op != "Conv":
            raise fail(f"node {i} should be the Conv {name}")
        w = inits.get(n.inputs[1]) if len(n.inputs) > 1 else None
        if w is None or w.shape != (cout, cin, kt, kf) or w.dtype != np.float32:
            raise fail(f"{name} weights are {None if w is None else w.shape}, "
                       f"expected {(cout, cin, kt, kf)}")
        b = inits.get(n.inputs[2]) if len(n.inputs) > 2 else None
        if (b is None) == act or (b is not None and b.shape != (cout,)):
            raise fail(f"{name} bias is {None if b is None else b.shape}")
        pads = n.attrs.get("pads", [0, 0, 0, 0])
        want_pads = [0, kf // 2, 0, kf // 2]
        if n.attrs.get("kernel_shape", [kt, kf]) != [kt, kf] or pads != want_pads \
                or n.attrs.get("strides", [1, 1]) != [1, 1] \
                or n.attrs.get("dilations", [1, 1]) != [1, 1] or n.attrs.get("group", 1) != 1 \
                or n.attrs.get("auto_pad", None) not in (None, 0):
            raise fail(f"{name} has attributes {n.attrs}")
        i += 1
        if act:
            if i + 1 >= len(ops) or ops[i].op != "LeakyRelu" or ops[i + 1].op != "Max":
                raise fail(f"{name} should be followed by LeakyRelu and Max")
            alpha = ops[i].attrs.get("alpha", 0.01)
            if not isinstance(alpha, float) or np.float32(alpha) != ALPHA:
                raise fail(f"LeakyRelu after {name} has alpha {alpha}")
            floors = [inits.get(x) for x in ops[i + 1].inputs]
            consts = [c for c in floors if c is not None]
            if len(consts) != 1 or consts[0].size != 1 or consts[0].reshape(()) != FLOOR:
                raise fail(f"Max after {name} is not max(x, {FLOOR})")
            i += 2
        # (cout, cin, kt, kf) -> (kt, kf, cin, cout) -> rows ordered (kt, kf, cin).
        wm = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kt * kf * cin, cout))
        layers.append(_Conv(kt, kf, wm, None if b is None else b.astype(np.float32), act))
    if i != len(ops):
        raise fail(f"{len(ops) - i} unexpected nodes after the last layer")
    return layers


class _StepPlan:
    """Preallocated buffers and the operations for one step of ``rows`` mel rows.

    Every convolution reads a buffer that holds its input plus, for a 3-row time
    kernel, the 2 context rows before it (rows 0-1) and, for a 3-bin frequency
    kernel, a zero bin at each end. Each layer writes its activation straight into
    the next layer's buffer, and the bias is a row of the weight matrix (times a
    constant 1 column), so a convolution is one concatenate, one matmul and three
    elementwise operations.
    """

    def __init__(self, layers: list[_Conv | _Pool], rows: int) -> None:
        self.rows = rows
        self.inputs: list[np.ndarray | None] = []
        """Per layer: a convolution's input buffer (context rows and zero bins included)."""
        self.ops: list[tuple[object, ...]] = []
        t, f, c = rows, BINS, 1
        dest: np.ndarray | None = None  # where the previous layer must write
        src: np.ndarray | None = None
        self.entry: np.ndarray | None = None
        for layer in layers:
            if isinstance(layer, _Pool):
                assert src is not None
                tp = t // layer.kt
                tmp = np.empty((tp, f, c), np.float32) if layer.kt == 2 else src
                fp = f // layer.kf
                self.inputs.append(None)
                self.ops.append(("pool", layer.kt, src, tmp))
                t, f = tp, fp
                dest = None
                self.ops[-1] += (None,)  # filled in by the next convolution
                continue
            ct, cf = layer.kt // 2 * 2, layer.kf // 2 * 2
            buf = np.zeros((t + ct, f + cf, c), np.float32)
            core = buf[ct:, cf // 2:cf // 2 + f]
            if self.entry is None:
                self.entry = core
            elif self.ops[-1][0] == "pool":
                self.ops[-1] = self.ops[-1][:4] + (core,)
            else:
                assert dest is None
                self.ops[-1] = self.ops[-1][:-1] + (core,)
            self.inputs.append(buf)
            k = layer.kt * layer.kf * c
            bias = layer.b is not None
            col = np.empty((t, f, k + bias), np.float32)
            if bias:
                col[..., k] = 1.0
            w = layer.w if layer.b is None else np.vstack((layer.w, layer.b[None]))
            slices = [buf[dt:dt + t, df:df + f] for dt in range(layer.kt) for df in range(layer.kf)]
            cout = layer.w.shape[1]
            y = np.empty((t * f, cout), np.float32)
            tmp = np.empty_like(y)
            out3 = y.reshape(t, f, cout)
            self.ops.append(("conv", slices, col[..., :k], col.reshape(t * f, -1), w, y, tmp,
                             layer.act, layer.kt == 3, buf, out3))
            src, c = out3, cout
        self.output = src

    def run(self, rows: np.ndarray) -> np.ndarray:
        assert self.entry is not None and self.output is not None
        self.entry[..., 0] = rows
        for op in self.ops:
            if op[0] == "conv":
                _, slices, colk, col2, w, y, tmp, act, timectx, buf, dest = op
                np.concatenate(slices, axis=2, out=colk)
                np.matmul(col2, w, out=y)
                if act:
                    np.multiply(y, ALPHA, out=tmp)
                    np.maximum(y, tmp, out=y)
                    np.maximum(y.reshape(dest.shape) if dest is not y.base else y, FLOOR,
                               out=dest)
                if timectx:
                    buf[:2] = buf[-2:]
            else:
                _, kt, src, tmp, dest = op
                if kt == 2:
                    np.maximum(src[0::2], src[1::2], out=tmp)
                np.maximum(tmp[:, 0::2], tmp[:, 1::2], out=dest)
        return self.output.reshape(-1, DIM).copy()


class StreamingEmbedding:
    """The embedding model, streamed: one embedding per 8 new mel rows.

    :meth:`prime` computes a whole 76-row window (as after a reset, or after a gap
    in the mel rows) and keeps each layer's context; :meth:`step` then takes the
    next 8 mel rows (or any multiple of 8) and returns one embedding per 8 rows.
    """

    def __init__(self, layers: list[_Conv | _Pool]) -> None:
        self.layers = layers
        self._plans: dict[int, _StepPlan] = {}
        self._plan = self._get_plan(STEP)
        self.primed = False

    @classmethod
    def load(cls, path: Path) -> StreamingEmbedding:
        return cls(_parse(Path(path)))

    def _get_plan(self, rows: int) -> _StepPlan:
        plan = self._plans.get(rows)
        if plan is None:
            if len(self._plans) >= 4:  # keep the frame plan, drop old batch plans
                for k in [k for k in self._plans if k != STEP]:
                    del self._plans[k]
            plan = self._plans[rows] = _StepPlan(self.layers, rows)
        return plan

    def reset(self) -> None:
        """Forget everything derived from audio; :meth:`prime` must come next."""
        for plan in self._plans.values():
            for buf in plan.inputs:
                if buf is not None:
                    buf.fill(0.0)
        self.primed = False

    def prime(self, window: np.ndarray) -> np.ndarray:
        """The embedding (96,) of a full (76, 32) mel window; starts streaming from it."""
        if window.shape != (WINDOW, BINS):
            raise ValueError(f"window has shape {window.shape}; expected {(WINDOW, BINS)}")
        x = np.asarray(window, dtype=np.float32)[:, :, None]  # (time, freq, channels)
        for layer, buf in zip(self.layers, self._plan.inputs, strict=True):
            if isinstance(layer, _Pool):
                if layer.kt == 2:
                    x = np.maximum(x[0::2], x[1::2])
                x = np.maximum(x[:, 0::2], x[:, 1::2])
                continue
            if layer.kt == 3:
                assert buf is not None
                f = x.shape[1]
                pad = (layer.kf // 2)
                buf[:2, pad:pad + f] = x[-2:]
            x = _conv(x, layer)
        self.primed = True
        return x.reshape(DIM)

    def step(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings (n, 96) for the next ``8 * n`` mel rows (shape (8n, 32)) of the stream."""
        if not self.primed:
            raise RuntimeError("StreamingEmbedding.step before prime")
        n = rows.shape[0] if rows.ndim == 2 else 0
        if rows.ndim != 2 or rows.shape[1] != BINS or n % STEP or not n:
            raise ValueError(f"rows have shape {rows.shape}; expected ({STEP}*n, {BINS})")
        plan = self._plan
        if n != plan.rows:
            plan = self._get_plan(n)
            self._move_context(self._plan, plan)
            out = plan.run(rows)
            self._move_context(plan, self._plan)
            return out
        return plan.run(rows)

    @staticmethod
    def _move_context(src: _StepPlan, dst: _StepPlan) -> None:
        for a, b in zip(src.inputs, dst.inputs, strict=True):
            if a is not None and b is not None:
                b[:2] = a[:2]


def _conv(x: np.ndarray, layer: _Conv) -> np.ndarray:
    """One convolution and its activation over a whole (time, freq, channels) block."""
    t_in, f, c = x.shape
    t = t_in - layer.kt + 1
    if layer.kf == 3:
        xp = np.zeros((t_in, f + 2, c), dtype=np.float32)
        xp[:, 1:-1] = x
    else:
        xp = x
    cols = [xp[dt:dt + t, df:df + f] for dt in range(layer.kt) for df in range(layer.kf)]
    patches = cols[0] if len(cols) == 1 else np.concatenate(cols, axis=2)
    y = patches.reshape(t * f, -1) @ layer.w
    if layer.b is not None:
        y += layer.b
    if layer.act:
        np.maximum(y, y * ALPHA, out=y)
        np.maximum(y, FLOOR, out=y)
    return y.reshape(t, f, -1)
