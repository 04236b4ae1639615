"""A microWakeWord streaming graph fused into a few numpy calls per pass.

:class:`edge.wake.micro.graph.MicroGraph` runs every TFLite operator as TFLite does, about
60 small numpy calls a pass and 7 more for each requantization; on audio that is numpy's
call overhead, not arithmetic. This module reads the same graph as what it is: a chain of
time sequences (the input rows, and each convolution's output rows), some of which keep
their last few rows as streaming state, and convolutions that each read a window of the
last rows of one sequence and write one new row of another. The READ_VARIABLE /
CONCATENATION / STRIDED_SLICE / ASSIGN_VARIABLE pattern becomes one preallocated buffer
per sequence (its state rows, then the new rows of the pass), SPLIT_V and the slices
become channel and row ranges, and the depthwise convolutions of one MixConv block
(concatenated along channels) become one depthwise convolution with zero taps.

Each convolution is then one BLAS product (or one einsum for a depthwise), a floor and a
clamp, exact to the integer: every value is float64 holding an integer or a fraction
whose denominator is a power of two, and TFLite's requantization ``(acc * qm + nudge) >>
shift`` is folded into the weights (``w * qm / 2**shift``) and a bias column, so each
partial sum is an integer multiple of ``2**-shift`` below ``2**53`` (checked per channel
at load) and float64 computes it without rounding. The two-stage rounding of CONV_2D
(round the high half, then round half away from zero) equals the single floor for every
value at or above zero, and below zero both clamp to the zero point under a ReLU, so a
convolution whose output may go below its zero point is refused here (the generic
interpreter runs it). The last FULLY_CONNECTED, LOGISTIC and QUANTIZE act on one value a
step and run as Python integers and one table.

A graph of any other shape raises :class:`NotFusable`; the engine then runs the generic
interpreter, and it checks at load that both give the same outputs and state.

Why one module of over 400 lines: the compiler and the pass share one contract, the
layout of a sequence's buffer (its state rows, then the pass's new rows, then a ones
column that carries the biases) and the windows over it; split in two, that layout would
be written twice, once where the weights are laid out and once where the views are cut.

>>> fused = FusedGraph(MicroGraph(read_tflite(path)))  # doctest: +SKIP
>>> fused.invoke_steps(np.zeros((6, 40)))  # doctest: +SKIP
array([0, 0])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from edge.wake.micro import ops
from edge.wake.micro.graph import MicroGraph, _const, _opt, _qparams, _qrange
from edge.wake.micro.tflite import Operator, Tensor

_floor, _add, _copyto = np.floor, np.add, np.copyto
# the compiled functions themselves: on these sizes numpy's Python wrappers (np.clip,
# np.einsum) cost as much again; numpy 2 keeps them in numpy._core, numpy 1 in numpy.core
_core = getattr(np, "_core", None) or np.core
_einsum: Callable[..., np.ndarray] = _core.multiarray.c_einsum
fast_clip: Callable[..., np.ndarray] = _core.umath.clip

Bound = np.ndarray | float
"""A clamp's bound: one for all channels, or one per channel."""
EXACT = 2 ** 52
"""Bound on every partial sum's numerator: float64 holds integers up to 2**53 exactly."""
MAX_STEPS = 32
"""Steps per pass; more run in several passes (a catch-up after the idle gate)."""


class NotFusable(ValueError):
    """The graph is not a chain of streaming convolutions this module fuses."""


@dataclass(eq=False)
class _Seq:
    """A time sequence of rows: ``rate`` new rows a step, ``hist`` old rows kept as state."""

    chans: int
    rate: int
    hist: int = 0
    var: str = ""
    buf: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass(frozen=True)
class _Win:
    """Rows ``[end - back, end - back + length)`` of ``seq`` (``end``: after the step's newest
    row), channels ``[c0, c1)``; shape (1, length, 1, c1 - c0)."""

    seq: _Seq
    back: int
    length: int
    c0: int
    c1: int


@dataclass(frozen=True)
class _Var:
    name: str
    rows: int
    chans: int


@dataclass(frozen=True)
class _Flat:
    win: _Win


@dataclass(frozen=True)
class _Assigned:
    seq: _Seq
    rows: int


@dataclass
class _Tail:
    """The last FULLY_CONNECTED and the elementwise operators after it, one value a step."""

    win: _Win
    weights: np.ndarray  # (length, chans + 1, 1), float64 integers, bias in the ones column
    qm: int
    right: int
    zero_point: int
    lo: int
    hi: int
    table: np.ndarray  # int8 value + 128 -> output value


@dataclass(eq=False)
class _Layer:
    """A convolution reading windows of ``src`` and writing new rows of ``dst``."""

    src: _Seq
    back: int
    span: int
    dst: _Seq
    d0: int
    d1: int
    depthwise: bool
    weights: np.ndarray
    """Dense: (span * (src.chans + 1), d1 - d0); depthwise: (span, src.chans + 1), the
    requantization's multiplier folded in; the bias sits on the ones column."""
    lo: np.ndarray | float
    hi: np.ndarray | float
    bias: np.ndarray | None = None
    """Depthwise only: (src.chans + 1,), 0 on the ones column."""
    c0: int = 0
    """Depthwise only: the first channel of ``src`` it reads (it writes ``d0``)."""


def _rq_constants(x: Tensor, w: Tensor, out: Tensor, fused: int, upward: bool
                  ) -> tuple[list[int], list[int], int, int, int]:
    xs, _ = _qparams(x)
    os_, ozp = _qparams(out)
    if w.scale.size == 0 or (w.zero_point.size and np.any(w.zero_point != 0)):
        raise NotFusable(f"weights {w.name!r} are not symmetrically quantized")
    lo, hi = ops.activation_range(fused, os_, ozp, *_qrange(out))
    real = np.float64(xs) * w.scale.astype(np.float64) / np.float64(os_)
    if not np.all(np.isfinite(real) & (real > 0)):
        raise NotFusable(f"weights {w.name!r} have a scale that is not positive")
    rq = ops.Requantizer(real, ozp, lo, hi, upward)
    return [int(v) for v in rq.qm], [int(v) for v in rq.right], ozp, lo, hi


def _scaled(wsum: np.ndarray, wabs: np.ndarray, bias: np.ndarray, qm: list[int],
            right: list[int], zp: int, lo: int, upward: bool, n_out: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel: the factor ``qm / 2**(31 + right)`` and the constant that,
    added to ``x . w * factor``, makes ``floor`` the requantized value."""
    if len(qm) == 1:
        qm, right = qm * n_out, right * n_out
    factor, const = np.zeros(n_out), np.zeros(n_out)
    for j in range(n_out):
        if not upward and right[j] > 0 and lo < zp:
            raise NotFusable("a convolution without ReLU rounds negative values differently")
        half = (1 << right[j]) >> 1
        den = 1 << (31 + right[j])
        num = int(bias[j]) * qm[j] + (1 << 30) + (half << 31) + zp * den
        if 128 * int(wabs[j]) * qm[j] + abs(num) + abs(int(wsum[j])) * qm[j] >= EXACT:
            raise NotFusable("accumulators too wide for exact float64 arithmetic")
        factor[j] = qm[j] / den
        const[j] = num / den
    return factor, const


class _Compiler:
    """Walks the operators once, giving each tensor a symbolic value (a window of a
    sequence, a variable, ...) and collecting the layers."""

    def __init__(self, graph: MicroGraph) -> None:
        model = graph.model
        self.t = model.tensors
        self.handles: dict[int, str] = {}
        self.env: dict[int, object] = {}
        self.consumers: dict[int, list[str]] = {}
        for op in model.operators:
            for i in op.inputs:
                self.consumers.setdefault(i, []).append(op.code)
        x = self.t[model.inputs[0]]
        if len(x.shape) not in (3, 4) or x.shape[0] != 1 or (len(x.shape) == 4
                                                                and x.shape[2] != 1):
            raise NotFusable(f"input shape {x.shape}")
        self.input = _Seq(x.shape[-1], x.shape[1])
        self.env[model.inputs[0]] = _Win(self.input, x.shape[1], x.shape[1], 0, x.shape[-1])
        self.seqs: list[_Seq] = [self.input]
        self.layers: list[_Layer] = []
        self.assigned: set[str] = set()
        for op in model.operators:
            kernel = getattr(self, "_" + op.code.lower(), None)
            if kernel is None:
                raise NotFusable(f"operator {op.code}")
            kernel(op)
        tail = self.env.get(model.outputs[0])
        if not isinstance(tail, _Tail):
            raise NotFusable("the output is not a FULLY_CONNECTED's")
        self.tail = tail
        for s in self.seqs:
            if s.var and s.var not in self.assigned:
                raise NotFusable(f"state {s.var!r} is read but never written")

    def _get(self, index: int, kind: type) -> object:
        v = self.env.get(index)
        if not isinstance(v, kind):
            raise NotFusable(f"tensor {self.t[index].name!r} is not a {kind.__name__[1:]}")
        return v

    def _win(self, index: int) -> _Win:
        v = self._get(index, _Win)
        assert isinstance(v, _Win)
        return v

    # -- state and data movement ------------------------------------------------------

    def _call_once(self, op: Operator) -> None:
        pass

    def _var_handle(self, op: Operator) -> None:
        name = op.options.string(1) if op.options else ""
        self.handles[op.outputs[0]] = name or self.t[op.outputs[0]].name

    def _read_variable(self, op: Operator) -> None:
        shape = self.t[op.outputs[0]].shape
        if op.inputs[0] not in self.handles or len(shape) != 4 or shape[0] != 1 or shape[2] != 1:
            raise NotFusable("a state variable that is not (1, rows, 1, channels)")
        self.env[op.outputs[0]] = _Var(self.handles[op.inputs[0]], shape[1], shape[3])

    def _assign_variable(self, op: Operator) -> None:
        v = self._get(op.inputs[1], _Assigned)
        assert isinstance(v, _Assigned)
        name = self.handles.get(op.inputs[0])
        if name != v.seq.var or v.rows != v.seq.hist or name in self.assigned:
            raise NotFusable("a state variable assigned other than its sequence's last rows")
        self.assigned.add(name)

    def _reshape(self, op: Operator) -> None:
        w = self._win(op.inputs[0])
        shape = self.t[op.outputs[0]].shape
        if shape in ((1, w.length, 1, w.c1 - w.c0), (1, w.length, w.c1 - w.c0)):
            self.env[op.outputs[0]] = w
        elif shape == (1, w.length * (w.c1 - w.c0)):
            self.env[op.outputs[0]] = _Flat(w)
        else:
            raise NotFusable(f"RESHAPE to {shape}")

    def _concatenation(self, op: Operator) -> None:
        out_t = self.t[op.outputs[0]]
        axis = _opt(op, 0, "i") % len(out_t.shape)
        if _opt(op, 1, "b") or len(out_t.shape) != 4:
            raise NotFusable("CONCATENATION with a fused activation")
        if any(_qparams(self.t[i]) != _qparams(out_t) for i in op.inputs):
            raise NotFusable("CONCATENATION of inputs quantized unlike its output")
        if axis == 1:
            if len(op.inputs) != 2:
                raise NotFusable("CONCATENATION in time of other than state and new rows")
            var = self._get(op.inputs[0], _Var)
            new = self._win(op.inputs[1])
            assert isinstance(var, _Var)
            s = new.seq
            if (new.back, new.length, new.c0, new.c1) != (s.rate, s.rate, 0, s.chans) or (
                    s.var or var.chans != s.chans):
                raise NotFusable("CONCATENATION in time of other than state and new rows")
            s.var, s.hist = var.name, var.rows
            self.env[op.outputs[0]] = _Win(s, s.hist + s.rate, s.hist + s.rate, 0, s.chans)
        elif axis == 3:
            self._join_channels(op)
        else:
            raise NotFusable(f"CONCATENATION on axis {axis}")

    def _join_channels(self, op: Operator) -> None:
        """New rows of several layers side by side: one sequence, each layer a range."""
        parts = [self._win(i) for i in op.inputs]
        total = sum(p.c1 - p.c0 for p in parts)
        joined = _Seq(total, 1)
        at = 0
        for i, p in zip(op.inputs, parts, strict=True):
            writers = [layer for layer in self.layers if layer.dst is p.seq]
            if (len(self.consumers.get(i, [])) != 1 or len(writers) != 1 or p.seq.var
                    or (p.back, p.length, p.c0, p.c1) != (1, 1, 0, p.seq.chans)):
                raise NotFusable("CONCATENATION of channels of other than new rows")
            layer = writers[0]
            layer.dst, layer.d0, layer.d1 = joined, at + layer.d0, at + layer.d1
            self.seqs.remove(p.seq)
            at += p.c1 - p.c0
        self.seqs.append(joined)
        self.env[op.outputs[0]] = _Win(joined, 1, 1, 0, total)

    def _strided_slice(self, op: Operator) -> None:
        w = self._win(op.inputs[0])
        begin, end, strides = (_const(self.t[i]).tolist() for i in op.inputs[1:4])
        bmask, emask = _opt(op, 0, "i"), _opt(op, 1, "i")
        if any(_opt(op, k, "i") for k in (2, 3, 4)) or len(begin) != 4:
            raise NotFusable("STRIDED_SLICE with a mask")
        offset = _opt(op, 5, "b")
        dims = (1, w.length, 1, w.c1 - w.c0)
        ranges = []
        for d in range(4):
            b, e, s = begin[d], end[d], strides[d]
            if offset:
                e = b + e
            lo, hi, st = slice(None if bmask >> d & 1 else b, None if emask >> d & 1 else e,
                               s).indices(dims[d])
            if st != 1 or hi <= lo:
                raise NotFusable("STRIDED_SLICE with a stride")
            ranges.append((lo, hi))
        (r0, r1), (c0, c1) = ranges[1], ranges[3]
        out = _Win(w.seq, w.back - r0, r1 - r0, w.c0 + c0, w.c0 + c1)
        if self.t[op.outputs[0]].shape != (1, r1 - r0, 1, c1 - c0):
            raise NotFusable("STRIDED_SLICE of an unexpected shape")
        users = self.consumers.get(op.outputs[0], [])
        if users and all(u == "ASSIGN_VARIABLE" for u in users):
            if out.back != out.length or (out.c0, out.c1) != (0, w.seq.chans):
                raise NotFusable("a state that is not its sequence's last rows")
            self.env[op.outputs[0]] = _Assigned(w.seq, out.length)
        else:
            self.env[op.outputs[0]] = out

    def _split_v(self, op: Operator) -> None:
        w = self._win(op.inputs[0])
        sizes = _const(self.t[op.inputs[1]]).tolist()
        axis = int(_const(self.t[op.inputs[2]]).reshape(-1)[0]) % 4
        if axis != 3:
            raise NotFusable("SPLIT_V other than along channels")
        if -1 in sizes:
            sizes[sizes.index(-1)] = (w.c1 - w.c0) - (sum(sizes) + 1)
        at = w.c0
        for o, n in zip(op.outputs, sizes, strict=True):
            self.env[o] = _Win(w.seq, w.back, w.length, at, at + n)
            at += n
        if at != w.c1:
            raise NotFusable("SPLIT_V sizes that do not add up")

    # -- arithmetic -------------------------------------------------------------------

    def _conv_2d(self, op: Operator) -> None:
        self._conv(op, depthwise=False)

    def _depthwise_conv_2d(self, op: Operator) -> None:
        self._conv(op, depthwise=True)

    def _conv(self, op: Operator, depthwise: bool) -> None:
        w = self._win(op.inputs[0])
        x, wt, out = self.t[op.inputs[0]], self.t[op.inputs[1]], self.t[op.outputs[0]]
        wq = _const(wt).astype(np.int64)
        o, kh, kw, i = wq.shape
        if depthwise:
            mult, fused, dh = _opt(op, 3, "i", 1), _opt(op, 4, "b"), _opt(op, 6, "i", 1)
        else:
            mult, fused, dh = 1, _opt(op, 3, "b"), _opt(op, 5, "i", 1)
        cin = w.c1 - w.c0
        span = dh * (kh - 1) + 1
        if (kw != 1 or mult != 1 or out.shape[:3] != (1, 1, 1) or span > w.length
                or x.shape != (1, w.length, 1, cin)
                or (depthwise and (o != 1 or i != cin)) or (not depthwise and i != cin)):
            raise NotFusable(f"{op.code} of this shape")
        if _opt(op, 0, "b") == 0 and ops.same_padding(w.length, kh, _opt(op, 2, "i", 1), dh
                                                      ) != (0, 0):
            raise NotFusable(f"{op.code} with padding")
        n_out = i if depthwise else o
        _, xzp = _qparams(x)
        bias_t = self.t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        bias = _const(bias_t).astype(np.int64) if bias_t is not None else np.zeros(n_out, np.int64)
        taps = wq.reshape(o, kh, i)  # (out, taps, in) or (1, taps, channels)
        flat = taps.reshape(o, -1) if not depthwise else taps[0].T  # (n_out, taps * in)
        wsum, wabs = flat.sum(axis=1), np.abs(flat).sum(axis=1)
        bias = bias - xzp * wsum
        qm, right, zp, lo, hi = _rq_constants(x, wt, out, fused, upward=depthwise)
        factor, const = _scaled(wsum, wabs, bias, qm, right, zp, lo, depthwise, n_out)
        src, C = w.seq, w.seq.chans
        # the kernel covers the window's first rows: TFLite's VALID window at offset 0
        back = w.back
        if depthwise:
            weights = np.zeros((span, C + 1))
            weights[::dh, w.c0:w.c1] = taps[0] * factor
            weights[0, C] = 1.0  # carries the ones column through to the output
            full_bias = np.zeros(C + 1)
            full_bias[w.c0:w.c1] = const
            dst = _Seq(cin, 1)
            self.layers.append(_Layer(src, back, span, dst, 0, cin, True, weights,
                                      float(lo), float(hi), full_bias, w.c0))
            self.seqs.append(dst)
            self.env[op.outputs[0]] = _Win(dst, 1, 1, 0, cin)
            return
        weights = np.zeros((span, C + 1, o + 1))
        weights[::dh, w.c0:w.c1, :o] = taps.transpose(1, 2, 0) * factor
        weights[0, C, :o] = const
        weights[0, C, o] = 1.0  # the output's own ones column: whole rows, contiguous
        dst = _Seq(o, 1)
        self.layers.append(_Layer(src, back, span, dst, 0, o, False,
                                  weights.reshape(span * (C + 1), o + 1), float(lo), float(hi)))
        self.seqs.append(dst)
        self.env[op.outputs[0]] = _Win(dst, 1, 1, 0, o)

    def _fully_connected(self, op: Operator) -> None:
        v = self.env.get(op.inputs[0])
        w = v.win if isinstance(v, _Flat) else self._win(op.inputs[0])
        x, wt, out = self.t[op.inputs[0]], self.t[op.inputs[1]], self.t[op.outputs[0]]
        wq = _const(wt).astype(np.int64)
        cin = w.c1 - w.c0
        if (wq.shape != (1, w.length * cin) or out.shape != (1, 1) or _opt(op, 1, "b")
                or out.dtype is not np.int8):
            raise NotFusable("FULLY_CONNECTED of other than one unit")
        if self.consumers.get(op.outputs[0], []) not in ([], ["LOGISTIC"], ["QUANTIZE"]):
            raise NotFusable("FULLY_CONNECTED whose output is used twice")
        _, xzp = _qparams(x)
        bias_t = self.t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        bias = int(_const(bias_t).reshape(-1)[0]) if bias_t is not None else 0
        bias -= xzp * int(wq.sum())
        if 128 * int(np.abs(wq).sum()) + abs(bias) >= EXACT:
            raise NotFusable("accumulators too wide for exact float64 arithmetic")
        qm, right, zp, lo, hi = _rq_constants(x, wt, out, _opt(op, 0, "b"), upward=False)
        C = w.seq.chans
        weights = np.zeros((w.length, C + 1, 1))
        weights[:, w.c0:w.c1, 0] = wq.reshape(w.length, cin)
        weights[0, C, 0] = bias
        table = np.arange(-128, 128, dtype=np.int64)
        self.env[op.outputs[0]] = _Tail(w, weights, qm[0], right[0], zp, lo, hi, table)

    def _tail(self, op: Operator) -> _Tail:
        tail = self._get(op.inputs[0], _Tail)
        assert isinstance(tail, _Tail)
        self.env[op.outputs[0]] = tail
        return tail

    def _logistic(self, op: Operator) -> None:
        tail = self._tail(op)
        x, out = self.t[op.inputs[0]], self.t[op.outputs[0]]
        if x.dtype is not np.int8 or out.dtype is not np.int8:
            raise NotFusable("LOGISTIC other than int8 to int8")
        tail.table = ops.logistic_table(*_qparams(x), *_qparams(out))[tail.table + 128].astype(
            np.int64)

    def _quantize(self, op: Operator) -> None:
        tail = self._tail(op)
        x, out = self.t[op.inputs[0]], self.t[op.outputs[0]]
        xs, xzp = _qparams(x)
        os_, ozp = _qparams(out)
        if x.dtype is not np.int8 or not (np.isfinite(xs / os_) and xs / os_ > 0):
            raise NotFusable("QUANTIZE of other than int8")
        rq = ops.Requantizer(np.array([xs / os_]), ozp, *_qrange(out))
        tail.table = rq(tail.table - xzp)


def _merge_depthwise(layers: list[_Layer]) -> list[_Layer]:
    """Depthwise layers that read one sequence and write one, on the same channels they
    read: one layer with the longest window, the shorter kernels' missing taps zero."""
    for layer in layers:
        if layer.depthwise and layer.c0 != layer.d0:
            raise NotFusable("a depthwise convolution that moves its channels")
    out: list[_Layer] = []
    for layer in layers:
        twin = next((m for m in out if m.depthwise and layer.depthwise and m.src is layer.src
                     and m.dst is layer.dst), None)
        if twin is None:
            out.append(layer)
            continue
        back = max(twin.back, layer.back)
        end = min(twin.back - twin.span, layer.back - layer.span)
        span = back - end
        weights = np.zeros((span, twin.src.chans + 1))
        for part in (twin, layer):
            at = back - part.back
            weights[at:at + part.span] += part.weights
        weights[:, -1] = 0.0
        weights[0, -1] = 1.0
        assert twin.bias is not None and layer.bias is not None
        if not (twin.d1 <= layer.d0 or layer.d1 <= twin.d0):
            raise NotFusable("depthwise convolutions writing the same channels")
        lo, hi = np.zeros(twin.src.chans), np.zeros(twin.src.chans)
        for part in (twin, layer):
            for bound, value in ((lo, part.lo), (hi, part.hi)):
                bound[part.d0:part.d1] = (value[part.d0:part.d1]
                                          if isinstance(value, np.ndarray) else value)
        twin.back, twin.span, twin.weights = back, span, weights
        twin.bias = twin.bias + layer.bias
        twin.lo, twin.hi = lo, hi
        twin.d0, twin.d1 = min(twin.d0, layer.d0), max(twin.d1, layer.d1)
    for layer in out:
        if layer.depthwise:
            if (layer.d0, layer.d1) != (0, layer.src.chans) or layer.dst.chans != layer.src.chans:
                raise NotFusable("a depthwise convolution over part of its channels")
            low, high = layer.lo, layer.hi
            if (isinstance(low, np.ndarray) and isinstance(high, np.ndarray)
                    and np.all(low == low[0]) and np.all(high == high[0])):
                layer.lo, layer.hi = float(low[0]), float(high[0])
    return out


_NONE = np.zeros(0)


def _bias(layer: _Layer) -> np.ndarray:
    assert layer.bias is not None
    return layer.bias


def _with_ones(lo: Bound, hi: Bound, chans: int) -> tuple[Bound, Bound]:
    """The clamp of whole rows: the channels' own, and 1 for the ones column."""
    if isinstance(lo, float) and isinstance(hi, float) and lo <= 1.0 <= hi:
        return lo, hi
    lo_, hi_ = np.ones(chans + 1), np.ones(chans + 1)
    lo_[:chans], hi_[:chans] = lo, hi
    return lo_, hi_


class _Step(NamedTuple):
    """One layer of a pass: its views and constants."""

    depthwise: bool
    win: np.ndarray
    weights: np.ndarray
    out: np.ndarray
    bias: np.ndarray
    """Depthwise only (a dense layer's bias is in its weights)."""
    vals: np.ndarray
    """What floor and clamp act on (``out`` itself, or its part of a row)."""
    lo: Bound
    hi: Bound


class _Plan(NamedTuple):
    """The views one pass of a given number of steps reads and writes."""

    rows: np.ndarray
    layers: list[_Step]
    tail_win: np.ndarray
    tail_weights: np.ndarray
    acc: np.ndarray
    moves: list[tuple[np.ndarray, np.ndarray]]
    """The state rows of each sequence, copied to the front of its buffer after the pass."""


class FusedGraph:
    """One streaming model, fused: the same outputs and state as :class:`MicroGraph`."""

    def __init__(self, graph: MicroGraph) -> None:
        c = _Compiler(graph)
        self.input, self.output = graph.input, graph.output
        self.input_scale, self.input_zero_point = graph.input_scale, graph.input_zero_point
        self.output_scale, self.output_zero_point = graph.output_scale, graph.output_zero_point
        self.batchable = True
        self._layers = _merge_depthwise(c.layers)
        self._seqs = c.seqs
        self._tail = c.tail
        self._table = [int(v) for v in c.tail.table]
        self._in = c.input
        initial = graph.state()
        for s in self._seqs:
            if s.var and (s.var not in initial or initial[s.var].size != s.hist * s.chans):
                raise NotFusable(f"state {s.var!r} has no initial value of its shape")
            s.buf = np.zeros((s.hist + MAX_STEPS * s.rate, s.chans + 1))
        self._plans: dict[int, _Plan] = {}
        self._initial = {s.var: initial[s.var].reshape(s.hist, s.chans).astype(np.float64)
                         for s in self._seqs if s.var}
        self.reset()

    def reset(self) -> None:
        for s in self._seqs:
            s.buf[:, :s.chans] = 0.0
            s.buf[:, s.chans] = 1.0
            if s.var:
                s.buf[:s.hist, :s.chans] = self._initial[s.var]

    def wipe(self) -> None:
        """Overwrite every buffer that held features of the audio, and start on new ones
        (so no view handed out by :meth:`state` shows the next stream)."""
        for s in self._seqs:
            s.buf.fill(0.0)
            s.buf = np.zeros_like(s.buf)
        self._plans.clear()
        self.reset()

    def state(self) -> dict[str, np.ndarray]:
        """The streaming state: each variable's current value, (1, rows, 1, channels)
        views of integers in float64."""
        return {s.var: s.buf[:s.hist, :s.chans].reshape(1, s.hist, 1, s.chans)
                for s in self._seqs if s.var}

    def _plan(self, steps: int) -> _Plan:
        """The views one pass of ``steps`` steps reads and writes, made once per count."""
        layers: list[_Step] = []
        for layer in self._layers:
            s, d = layer.src, layer.dst
            row = (s.chans + 1) * 8
            base = s.buf[s.hist + s.rate - layer.back:]
            out = d.buf[d.hist:d.hist + steps]
            if layer.depthwise:
                win = as_strided(base, (steps, layer.span, s.chans + 1), (s.rate * row, row, 8))
                layers.append(_Step(True, win, layer.weights, out, _bias(layer), out,
                                    *_with_ones(layer.lo, layer.hi, d.chans)))
            elif (layer.d0, layer.d1) == (0, d.chans):  # whole rows: contiguous, ones included
                # (steps, 1, n) @ (n, m): a vector-matrix product a step costs less than a
                # (steps, n) @ (n, m) product on these sizes
                win = as_strided(base, (steps, 1, layer.span * (s.chans + 1)),
                                 (s.rate * row, 0, 8))
                layers.append(_Step(False, win, layer.weights,
                                    out.reshape(steps, 1, d.chans + 1), _NONE, out,
                                    *_with_ones(layer.lo, layer.hi, d.chans)))
            else:  # one part of a row (a part of a CONCATENATION along channels)
                win = as_strided(base, (steps, layer.span * (s.chans + 1)), (s.rate * row, 8))
                target = out[:, layer.d0:layer.d1]
                layers.append(_Step(False, win, layer.weights[:, :-1], target, _NONE, target,
                                    layer.lo, layer.hi))
        t = self._tail
        s = t.win.seq
        row = (s.chans + 1) * 8
        tail_win = as_strided(s.buf[s.hist + s.rate - t.win.back:],
                              (steps, 1, t.win.length * (s.chans + 1)), (s.rate * row, 0, 8))
        moves = [(s.buf[:s.hist], s.buf[steps * s.rate:steps * s.rate + s.hist])
                 for s in self._seqs if s.hist]
        i = self._in
        return _Plan(i.buf[i.hist:i.hist + steps * i.rate, :i.chans], layers, tail_win,
                     t.weights.reshape(-1, 1), np.zeros((steps, 1, 1)), moves)

    def _pass(self, rows: np.ndarray, steps: int) -> list[int]:
        plan = self._plans.get(steps)
        if plan is None:
            plan = self._plans[steps] = self._plan(steps)
        _copyto(plan.rows, rows)
        einsum, matmul, clip, floor, add = _einsum, np.matmul, fast_clip, _floor, _add
        for depthwise, win, weights, dst, bias, vals, lo, hi in plan.layers:
            if depthwise:
                einsum("tkc,kc->tc", win, weights, out=dst)
                add(dst, bias, out=dst)
            else:
                matmul(win, weights, out=dst)
            floor(vals, out=vals)
            clip(vals, lo, hi, out=vals)
        matmul(plan.tail_win, plan.tail_weights, out=plan.acc)
        for dst, src in plan.moves:
            _copyto(dst, src)
        t = self._tail
        qm, right, half, table = t.qm, t.right, (1 << t.right) >> 1, self._table
        out: list[int] = []
        for a in plan.acc.ravel().tolist():  # MultiplyByQuantizedMultiplier, in Python ints
            high = (int(a) * qm + (1 << 30)) >> 31
            high = (high + half - (1 if high < 0 and right else 0)) >> right
            out.append(table[min(max(high + t.zero_point, t.lo), t.hi) + 128])
        return out

    def invoke_steps(self, x: np.ndarray) -> np.ndarray:
        """The outputs (steps,) of consecutive steps whose input rows (integers, any
        numeric type) are stacked along time."""
        rate, chans = self._in.rate, self._in.chans
        rows = x.reshape(-1, chans)
        steps = rows.shape[0] // rate
        out: list[int] = []
        for at in range(0, steps, MAX_STEPS):
            n = min(MAX_STEPS, steps - at)
            out += self._pass(rows[at * rate:(at + n) * rate], n)
        return np.array(out, dtype=self.output.dtype)

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """The output tensor for one input step."""
        return self.invoke_steps(x).reshape(self.output.shape)
