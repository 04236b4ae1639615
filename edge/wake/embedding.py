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
window each frame. The result equals onnxruntime's to float32 rounding: only the
summation order differs, so embeddings (which reach about 70) agree to about 1e-6
relative, a few 1e-5 absolute.

The weights are read straight from the ONNX file with a tiny protobuf reader
(:mod:`edge.wake.onnx_reader`), so the ``onnx`` package is not needed. The graph is
checked node by node against the architecture this code implements; anything else
raises :class:`ModelError` and the caller keeps using onnxruntime.

Why one module of over 400 lines: the architecture check, the step plan and the layers
it runs are one algorithm, each written for the others; the ONNX reading stands apart.

>>> emb = StreamingEmbedding.load(path)
>>> first = emb.prime(mel[-76:])      # (96,), after a reset or a gap
>>> more = emb.step(mel[-8:])         # (1, 96) for each further 8 mel rows
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.errors import ModelError
from edge.wake.onnx_reader import read_onnx

WINDOW = 76
"""Mel rows of one full window."""
BINS = 32
STEP = 8
"""Mel rows per embedding: the model's total time stride."""
DIM = 96
ALPHA = np.float32(0.2)
FLOOR = np.float32(-0.4)
"""The constant of the graph's ``Max`` after every LeakyRelu: a floor at -0.4."""



class _ConvSpec(NamedTuple):
    name: str
    cout: int
    cin: int
    kt: int
    """Kernel rows in time (3: needs 2 rows of context)."""
    kf: int
    """Kernel bins in frequency (3: padded by one bin at each end)."""
    act: bool = True
    """Bias, LeakyRelu and the floor follow (all but the last convolution)."""


class _PoolSpec(NamedTuple):
    kt: int
    kf: int


_ARCH: tuple[_ConvSpec | _PoolSpec, ...] = (
    _ConvSpec("conv2d", 24, 1, 3, 3),
    _ConvSpec("conv2d_1", 24, 24, 1, 3),
    _ConvSpec("conv2d_2", 24, 24, 3, 1),
    _PoolSpec(2, 2),
    _ConvSpec("conv2d_3", 48, 24, 1, 3),
    _ConvSpec("conv2d_4", 48, 48, 3, 1),
    _ConvSpec("conv2d_5", 48, 48, 1, 3),
    _ConvSpec("conv2d_6", 48, 48, 3, 1),
    _PoolSpec(1, 2),
    _ConvSpec("conv2d_7", 72, 48, 1, 3),
    _ConvSpec("conv2d_8", 72, 72, 3, 1),
    _ConvSpec("conv2d_9", 72, 72, 1, 3),
    _ConvSpec("conv2d_10", 72, 72, 3, 1),
    _PoolSpec(2, 2),
    _ConvSpec("conv2d_11", 96, 72, 1, 3),
    _ConvSpec("conv2d_12", 96, 96, 3, 1),
    _ConvSpec("conv2d_13", 96, 96, 1, 3),
    _ConvSpec("conv2d_14", 96, 96, 3, 1),
    _PoolSpec(1, 2),
    _ConvSpec("conv2d_15", 96, 96, 1, 3),
    _ConvSpec("conv2d_16", 96, 96, 3, 1),
    _ConvSpec("conv2d_17", 96, 96, 1, 3),
    _ConvSpec("conv2d_18", 96, 96, 3, 1),
    _PoolSpec(2, 2),
    _ConvSpec("conv2d_19", 96, 96, 3, 1, act=False),
)
"""Time is "valid" throughout; the three 2x2 pools make the total time stride 8."""


# --- the network -------------------------------------------------------------------

@dataclass
class _Conv:
    """One convolution of the embedding model, its weights laid out for one matrix product."""

    kt: int
    kf: int
    w: np.ndarray
    """(kt * kf * cin, cout), rows ordered (time tap, freq tap, input channel)."""
    b: np.ndarray | None
    act: bool


@dataclass
class _Pool:
    """One max pooling of the embedding model (time and frequency, or frequency only)."""

    kt: int
    kf: int


Layer = _Conv | _Pool
"""One layer of the embedding model, as :func:`parse_layers` reads it."""


def parse_layers(path: Path) -> list[Layer]:
    """The layers of the embedding model, checked node by node against :data:`_ARCH`."""
    try:
        inits, nodes = read_onnx(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the embedding model {path}: {exc}") from exc

    def fail(what: str) -> ModelError:
        return ModelError(f"embedding model {path.name} is not the expected architecture: {what}")

    def const(name: str) -> list[float]:
        c = inits.get(name)
        return [] if c is None else c.reshape(-1).tolist()

    # One chain: Reshape to NCHW (N, 1, time, mel), the layers, Reshape to (N, 96).
    if len(nodes) < 2 or nodes[0].op != "Reshape" or nodes[-1].op != "Reshape" \
            or const(nodes[0].inputs[-1]) != [-1, 1, WINDOW, BINS] \
            or const(nodes[-1].inputs[-1]) != [-1, 1, 1, DIM]:
        raise fail("it does not start and end with the expected Reshape nodes")
    for prev, node in zip(nodes, nodes[1:], strict=False):
        if not node.inputs or len(prev.outputs) != 1 or node.inputs[0] != prev.outputs[0]:
            raise fail(f"the {node.op} node does not take the output of the {prev.op} before")
    ops = nodes[1:-1]
    layers: list[Layer] = []
    i = 0
    for spec in _ARCH:
        n = ops[i] if i < len(ops) else None
        i += 1
        if isinstance(spec, _PoolSpec):
            kt, kf = spec
            if n is None or n.op != "MaxPool" or n.attrs.get("kernel_shape") != [kt, kf] \
                    or n.attrs.get("strides") != [kt, kf] \
                    or n.attrs.get("pads", [0, 0, 0, 0]) != [0, 0, 0, 0] \
                    or n.attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
                raise fail(f"node {i} should be MaxPool {kt}x{kf}")
            layers.append(_Pool(kt, kf))
            continue
        name, cout, cin, kt, kf, act = spec
        if n is None or n.op != "Conv":
            raise fail(f"node {i} should be the Conv {name}")
        w = inits.get(n.inputs[1]) if len(n.inputs) > 1 else None
        if w is None or w.shape != (cout, cin, kt, kf) or w.dtype != np.float32:
            raise fail(f"{name} weights are {None if w is None else w.shape}, "
                       f"expected {(cout, cin, kt, kf)}")
        b = inits.get(n.inputs[2]) if len(n.inputs) > 2 else None
        if (b is None) == act or (b is not None and (b.shape != (cout,) or b.dtype != w.dtype)):
            raise fail(f"{name} bias is {None if b is None else b.shape}")
        pad = kf // 2
        if n.attrs.get("kernel_shape", [kt, kf]) != [kt, kf] \
                or n.attrs.get("pads", [0, 0, 0, 0]) != [0, pad, 0, pad] \
                or n.attrs.get("strides", [1, 1]) != [1, 1] \
                or n.attrs.get("dilations", [1, 1]) != [1, 1] or n.attrs.get("group", 1) != 1 \
                or n.attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
            raise fail(f"{name} has attributes {n.attrs}")
        if act:
            if i + 1 >= len(ops) or ops[i].op != "LeakyRelu" or ops[i + 1].op != "Max":
                raise fail(f"{name} should be followed by LeakyRelu and Max")
            alpha = ops[i].attrs.get("alpha", 0.01)
            if not isinstance(alpha, float) or np.float32(alpha) != ALPHA:
                raise fail(f"LeakyRelu after {name} has alpha {alpha!r}")
            floor = [const(x) for x in ops[i + 1].inputs[1:]]
            if len(ops[i + 1].inputs) != 2 or floor[0] != [FLOOR]:
                raise fail(f"Max after {name} is not max(x, {FLOOR})")
            i += 2
        # (cout, cin, kt, kf) -> (kt, kf, cin, cout) -> rows ordered (kt, kf, cin).
        wm = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kt * kf * cin, cout))
        layers.append(_Conv(kt, kf, wm, b, act))
    if i != len(ops):
        raise fail(f"{len(ops) - i} unexpected nodes after the last layer")
    return layers


@dataclass
class _ConvOp:
    """A convolution in a step plan: its preallocated buffers and weights."""

    taps: list[np.ndarray]
    """Shifted views of the input buffer, one per kernel tap."""
    col: np.ndarray
    """The im2col target, without the constant 1 column of the bias."""
    col2d: np.ndarray
    w: np.ndarray
    """Weights with the bias as last row."""
    y: np.ndarray
    y3: np.ndarray
    tmp: np.ndarray
    act: bool
    buf: np.ndarray | None
    """The input buffer, when it holds 2 context rows to carry over."""
    dest: np.ndarray | None = None


@dataclass
class _PoolOp:
    """A max pooling in a step plan: its source and target buffers."""

    kt: int
    src: np.ndarray
    tmp: np.ndarray
    dest: np.ndarray | None = None


class _StepPlan:
    """Preallocated buffers and the operations for one step of ``rows`` mel rows.

    Every convolution reads a buffer that holds its input plus, for a 3-row time
    kernel, the 2 context rows before it (rows 0-1) and, for a 3-bin frequency
    kernel, a zero bin at each end. Each layer writes its activation straight into
    the next layer's buffer, and the bias is a row of the weight matrix (times a
    constant 1 column), so a convolution is one concatenate, one matmul and three
    elementwise operations.
    """

    def __init__(self, layers: list[Layer], rows: int) -> None:
        self.rows = rows
        self.entry = np.zeros((0, BINS), np.float32)
        """Where the mel rows go: a view into the first convolution's input buffer."""
        self.output = np.zeros((0, DIM), np.float32)
        self.inputs: list[np.ndarray | None] = []
        """Per layer: a convolution's input buffer (context rows and zero bins included)."""
        self.ops: list[_ConvOp | _PoolOp] = []
        t, f, c = rows, BINS, 1
        out: np.ndarray | None = None  # the previous layer's output
        for layer in layers:
            if isinstance(layer, _Pool):
                assert out is not None
                self.ops[-1].dest = out  # the convolution before activates in place
                t //= layer.kt
                tmp = np.empty((t, f, c), np.float32) if layer.kt == 2 else out
                f //= layer.kf
                self.inputs.append(None)
                self.ops.append(_PoolOp(layer.kt, out, tmp))
                continue
            ct, cf = layer.kt - 1, layer.kf - 1
            buf = np.zeros((t + ct, f + cf, c), np.float32)
            core = buf[ct:, cf // 2:cf // 2 + f]
            if self.ops:
                self.ops[-1].dest = core
            else:
                self.entry = core[..., 0]
            self.inputs.append(buf)
            k = layer.kt * layer.kf * c
            w, bias = layer.w, layer.b is not None
            if layer.b is not None:
                w = np.vstack((w, layer.b[None]))
            col = np.empty((t, f, k + bias), np.float32)
            col[..., k:] = 1.0
            taps = [buf[dt:dt + t, df:df + f] for dt in range(layer.kt) for df in range(layer.kf)]
            c = w.shape[1]
            y = np.empty((t * f, c), np.float32)
            y3 = y.reshape(t, f, c)
            self.ops.append(_ConvOp(taps, col[..., :k], col.reshape(t * f, -1), w, y, y3,
                                    np.empty_like(y), layer.act, buf if ct else None))
            out = y3 if layer.act else None
            if not layer.act:
                self.output = y
        if any(op.dest is None for op in self.ops[:-1]) or self.ops[-1].dest is not None:
            raise ModelError("the embedding model's layers do not chain")

    def run(self, rows: np.ndarray) -> np.ndarray:
        self.entry[...] = rows
        for op in self.ops:
            if isinstance(op, _ConvOp):
                np.concatenate(op.taps, axis=2, out=op.col)
                np.dot(op.col2d, op.w, out=op.y)
                if op.act:
                    np.multiply(op.y, ALPHA, out=op.tmp)
                    np.maximum(op.y, op.tmp, out=op.y)
                    np.maximum(op.y3, FLOOR, out=op.dest)
                if op.buf is not None:
                    op.buf[:2] = op.buf[-2:]
            else:
                if op.kt == 2:
                    np.maximum(op.src[0::2], op.src[1::2], out=op.tmp)
                np.maximum(op.tmp[:, 0::2], op.tmp[:, 1::2], out=op.dest)
        return self.output.copy()


class StreamingEmbedding:
    """The embedding model, streamed: one embedding per 8 new mel rows.

    :meth:`prime` computes a whole 76-row window (as after a reset, or after a gap
    in the mel rows) and keeps each layer's context; :meth:`step` then takes the
    next 8 mel rows (or any multiple of 8) and returns one embedding per 8 rows.
    """

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self._plan = _StepPlan(layers, STEP)
        self.primed = False
        self._batch_plans: dict[int, _StepPlan] = {}

    @classmethod
    def load(cls, path: Path) -> StreamingEmbedding:
        return cls(parse_layers(Path(path)))

    def reset(self) -> None:
        """Forget everything derived from audio; :meth:`prime` must come next."""
        for buf in self._plan.inputs:
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
                pad = layer.kf // 2
                buf[:2, pad:pad + x.shape[1]] = x[-2:]
            x = _conv(x, layer)
        self.primed = True
        return x.reshape(DIM)

    def step(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings (n, 96) for the next ``8 * n`` mel rows (shape (8n, 32)) of the stream."""
        if not self.primed:
            raise RuntimeError("StreamingEmbedding.step before prime")
        n = rows.shape[0] // STEP if rows.ndim == 2 else 0
        if rows.ndim != 2 or rows.shape[1] != BINS or rows.shape[0] != n * STEP or not n:
            raise ValueError(f"rows have shape {rows.shape}; expected ({STEP}*n, {BINS})")
        if n == 1:
            return self._plan.run(rows)
        # One frame at a time: a batch is rare (a catch-up) and this keeps memory flat.
        return np.vstack([self._plan.run(rows[i:i + STEP]) for i in range(0, n * STEP, STEP)])

    def step_batched(self, rows: np.ndarray, frames: int = 8) -> np.ndarray:
        """As :meth:`step`, with ``frames`` embeddings per matrix product (offline only).

        About a third faster per embedding than :meth:`step` (``edge measure``'s batched
        mode), but the products sum in another order than the device's one frame per step:
        the embeddings differ from it by float32 rounding, not bit for bit.
        """
        if not self.primed:
            raise RuntimeError("StreamingEmbedding.step_batched before prime")
        n = rows.shape[0] // STEP if rows.ndim == 2 else 0
        if rows.ndim != 2 or rows.shape[1] != BINS or rows.shape[0] != n * STEP or not n:
            raise ValueError(f"rows have shape {rows.shape}; expected ({STEP}*n, {BINS})")
        whole = n // frames * frames
        out = []
        if whole:
            plan = self._batch_plans.get(frames)
            if plan is None:
                plan = self._batch_plans[frames] = _StepPlan(self.layers, STEP * frames)
            _carry_context(self._plan, plan)
            size = STEP * frames
            out += [plan.run(rows[i:i + size]) for i in range(0, whole * STEP, size)]
            _carry_context(plan, self._plan)
        if whole < n:
            out.append(self.step(rows[whole * STEP:]))
        return np.vstack(out)


def _carry_context(src: _StepPlan, dest: _StepPlan) -> None:
    """Hand the 2 context rows of every 3-row convolution from one step plan to another."""
    for a, b in zip(src.inputs, dest.inputs, strict=True):
        if a is not None and b is not None:
            b[:2] = a[:2]


class WindowEmbedding:
    """The embedding model over whole windows, called as an onnxruntime session is.

    Input (n, 76, 32, 1) mel windows, output (n, 1, 1, 96): what ``edge measure`` and
    the engine's load check ask of the embedding model when onnxruntime is not loaded.
    Not thread-safe: one per engine, as :class:`~edge.wake.engine.FeatureModels` holds it.
    """

    def __init__(self, layers: list[Layer], input_name: str = "input_1") -> None:
        self.layers = layers
        self._stream = StreamingEmbedding(layers)
        self._input = input_name

    def get_inputs(self) -> list[tuple[str, list[int | None]]]:
        return [_Port(self._input, [None, WINDOW, BINS, 1])]

    def get_outputs(self) -> list[tuple[str, list[int | None]]]:
        return [_Port("embedding", [None, 1, 1, DIM])]

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds[self._input]
        out = [self._stream.prime(w) for w in x.reshape(-1, WINDOW, BINS)]
        self._stream.reset()
        return [np.array(out, dtype=np.float32).reshape(-1, 1, 1, DIM)]


class _Port(NamedTuple):
    name: str
    shape: list[int | None]


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


_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


_blas_limit: list[int] = []
"""The limit this process has applied (each model load asks; /proc is read once)."""


def limit_blas_threads(threads: int = 1) -> bool:
    """Best effort: cap the threads of the OpenBLAS numpy has loaded, process-wide.

    OpenBLAS otherwise splits even the small matrix products of
    :class:`StreamingEmbedding` over every core, which burns CPU on spinning worker
    threads for no gain. ``OPENBLAS_NUM_THREADS`` in the environment, if set,
    wins: then nothing is changed. Returns whether a limit was applied.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"):
        return False
    if _blas_limit == [threads]:
        return True
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return False
    done = False
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                setter(threads)
                done = True
                break
    if done:
        _blas_limit[:] = [threads]
    return done
