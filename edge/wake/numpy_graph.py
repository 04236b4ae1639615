"""Run a small ONNX graph with numpy: the melspectrogram, the wake-word classifiers and Silero.

openWakeWord's melspectrogram front end, its classifiers and the Silero VAD are small
fixed graphs of a few dozen well-known operators. :class:`NumpyGraph` compiles such a
graph once into a list of numpy steps, so the daemon can run them without importing
onnxruntime (about 20 MB of resident memory, more with each session's arenas).

Only the operators and attributes listed in ``_OPS`` are accepted, each with exactly the
semantics of the ONNX specification for the forms these models use (1-D convolutions,
a forward LSTM without peepholes, reflect padding, ...). Any other operator, attribute or
form raises :class:`ModelError` at load time, and the caller runs the model on
onnxruntime instead. Whether the numbers are right is checked at load against reference
output recorded for the model file (:mod:`edge.wake.golden`), and in the tests against
onnxruntime itself. The daemon runs Silero through it; the melspectrogram and the
classifiers have faster kernels of their own (:mod:`edge.wake.melspec`,
:mod:`edge.wake.dense`), and this module is their reference in the tests.

Why one module of over 400 lines: the operators are one table, each entry a few lines
written against the same compile step and value environment; split up, every piece
would import the others.

>>> g = NumpyGraph.load(Path("models/melspectrogram.onnx"))
>>> g.run({"input": samples[None]})[0].shape  # doctest: +SKIP
(1, 1, 8, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.errors import ModelError
from edge.wake.onnx_reader import Graph, Node, load_graph

Env = dict[str, np.ndarray]
Step = Callable[[Env], None]

_CASTS = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}


class _Unsupported(Exception):
    """The graph uses something this module does not implement."""


def _ints(node: Node, key: str, default: list[int] | None = None) -> list[int]:
    v = node.attrs.get(key, default)
    if not isinstance(v, list) or not all(isinstance(i, int) for i in v):
        raise _Unsupported(f"{node.op} attribute {key}={v!r}")
    return [int(i) for i in v]


def _int(node: Node, key: str, default: int) -> int:
    v = node.attrs.get(key, default)
    if not isinstance(v, int):
        raise _Unsupported(f"{node.op} attribute {key}={v!r}")
    return v


def _only(node: Node, *allowed: str) -> None:
    extra = set(node.attrs) - set(allowed)
    if extra:
        raise _Unsupported(f"{node.op} attribute {sorted(extra)}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0: the sigmoid is 0, rightly
        out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out.astype(x.dtype, copy=False)


def _axes(node: Node, env: Env) -> tuple[int, ...] | None:
    """Reduce/Squeeze/Unsqueeze axes: an attribute (old opsets) or the second input."""
    if "axes" in node.attrs:
        return tuple(_ints(node, "axes"))
    if len(node.inputs) > 1 and node.inputs[1]:
        return tuple(int(a) for a in env[node.inputs[1]].reshape(-1))
    return None


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int,
            pads: list[int], group: int) -> np.ndarray:
    """ONNX Conv over (N, C, L) with weights (M, C / group, K)."""
    if pads[0] or pads[1]:
        padded = np.zeros((x.shape[0], x.shape[1], x.shape[2] + pads[0] + pads[1]), x.dtype)
        padded[:, :, pads[0]:pads[0] + x.shape[2]] = x
        x = padded
    n, c, length = x.shape
    m, cg, k = w.shape
    lo = (length - k) // stride + 1
    if group == 1 and k == 1:  # pointwise: one matrix product
        y = np.matmul(w[:, :, 0], x[:, :, :(lo - 1) * stride + 1:stride])
    elif group == 1 and c == 1:  # one channel, a long kernel: frames times kernels
        st = x.strides
        frames = np.lib.stride_tricks.as_strided(x, (n, lo, k), (st[0], st[2] * stride, st[2]),
                                                 writeable=False)
        y = np.matmul(frames, w[:, 0, :].T).transpose(0, 2, 1)
    elif group == c == m and cg == 1:  # depthwise: one multiply-add per tap
        end = (lo - 1) * stride + 1
        y = x[:, :, 0:end:stride] * w[None, :, 0, 0:1]
        for t in range(1, k):
            y += x[:, :, t:t + end:stride] * w[None, :, 0, t:t + 1]
    elif group == 1:
        win = np.lib.stride_tricks.sliding_window_view(x, k, axis=2)[:, :, ::stride]
        cols = win.transpose(0, 2, 1, 3).reshape(n * lo, c * k)
        y = (cols @ w.reshape(m, c * k).T).reshape(n, lo, m).transpose(0, 2, 1)
    else:
        raise ValueError(f"Conv with group {group} over {c} channels")
    if b is not None:
        y = y + b[None, :, None]
    return np.ascontiguousarray(y, dtype=np.float32)


def _lstm(x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None,
          h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A forward ONNX LSTM (gates i, o, f, c; sigmoid, tanh, tanh) over (seq, batch, input)."""
    hid = r.shape[-1]
    wt, rt = w[0].T, r[0].T
    bias = (b[0, :4 * hid] + b[0, 4 * hid:]) if b is not None else 0.0
    h, c = h[0], c[0]
    ys = []
    for t in range(x.shape[0]):
        g = x[t] @ wt + h @ rt + bias
        i, o = _sigmoid(g[:, :hid]), _sigmoid(g[:, hid:2 * hid])
        f, cc = _sigmoid(g[:, 2 * hid:3 * hid]), np.tanh(g[:, 3 * hid:])
        c = f * c + i * cc
        h = o * np.tanh(c)
        ys.append(h)
    y = np.stack(ys)[:, None]
    return y.astype(np.float32), h[None].astype(np.float32), c[None].astype(np.float32)


_BIG = np.iinfo(np.int64).max // 2


def _slice_index(ndim: int, starts: np.ndarray, ends: np.ndarray, axes: np.ndarray | None,
                 steps: np.ndarray | None) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    ax = range(len(starts)) if axes is None else axes.reshape(-1)
    st = [1] * len(starts) if steps is None else steps.reshape(-1)
    for a, s, e, k in zip(ax, starts.reshape(-1), ends.reshape(-1), st, strict=True):
        index[int(a)] = slice(int(np.clip(s, -_BIG, _BIG)), int(np.clip(e, -_BIG, _BIG)), int(k))
    return tuple(index)


def _pad(node: Node) -> Step:
    _only(node, "mode")
    mode = node.attrs.get("mode", b"constant")
    if mode not in (b"constant", b"reflect", b"edge") or len(node.inputs) > 3:
        raise _Unsupported(f"Pad mode {mode!r}")
    x, p, out = node.inputs[0], node.inputs[1], node.outputs[0]
    value = node.inputs[2] if len(node.inputs) > 2 else ""

    def step(env: Env) -> None:
        pads = env[p].reshape(-1)
        half = len(pads) // 2
        width = [(int(pads[i]), int(pads[i + half])) for i in range(half)]
        if mode == b"reflect":
            env[out] = np.pad(env[x], width, mode="reflect")
        elif mode == b"edge":
            env[out] = np.pad(env[x], width, mode="edge")
        else:
            fill = env[value].reshape(-1)[0] if value else 0
            env[out] = np.pad(env[x], width, constant_values=fill)
    return step


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[Node], Step]:
    def make(node: Node) -> Step:
        _only(node)
        a, b, out = node.inputs[0], node.inputs[1], node.outputs[0]

        def step(env: Env) -> None:
            env[out] = fn(env[a], env[b])
        return step
    return make


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Node], Step]:
    def make(node: Node) -> Step:
        _only(node)
        a, out = node.inputs[0], node.outputs[0]

        def step(env: Env) -> None:
            env[out] = fn(env[a])
        return step
    return make


def _simple(fn: Callable[[Node, Env], np.ndarray], *attrs: str) -> Callable[[Node], Step]:
    """A node whose one output is ``fn(node, env)``, accepting the named attributes."""
    def make(node: Node) -> Step:
        _only(node, *attrs)
        out = node.outputs[0]

        def step(env: Env) -> None:
            env[out] = fn(node, env)
        return step
    return make


def _mean(x: np.ndarray, axis: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    total = x.sum(axis=axis, keepdims=keepdims)
    count = x.size // max(total.size, 1) if x.size else 1
    out: np.ndarray = (total / np.asarray(count, dtype=x.dtype)).astype(x.dtype, copy=False)
    return out


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[[Node], Step]:
    def make(node: Node) -> Step:
        _only(node, "axes", "keepdims")
        keep = bool(_int(node, "keepdims", 1))
        fixed = tuple(_ints(node, "axes")) if "axes" in node.attrs else None
        x, out = node.inputs[0], node.outputs[0]

        def step(env: Env) -> None:
            axes = fixed if fixed is not None else _axes(node, env)
            env[out] = fn(env[x], axes, keep)
        return step
    return make


def _gemm(node: Node, env: Env) -> np.ndarray:
    a, b = env[node.inputs[0]], env[node.inputs[1]]
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    if alpha != 1.0 or beta != 1.0:
        raise _Unsupported("Gemm with alpha or beta other than 1")
    y: np.ndarray = a @ b
    if len(node.inputs) > 2 and node.inputs[2]:
        y = y + env[node.inputs[2]]
    return y


def _conv(node: Node) -> Step:
    _only(node, "auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
    if node.attrs.get("auto_pad", b"NOTSET") != b"NOTSET" \
            or _ints(node, "dilations", [1]) != [1] or len(_ints(node, "strides", [1])) != 1:
        raise _Unsupported("Conv other than 1-D, explicitly padded and undilated")
    stride, pads = _ints(node, "strides", [1])[0], _ints(node, "pads", [0, 0])
    group = _int(node, "group", 1)
    xn, wn = node.inputs[0], node.inputs[1]
    bn = node.inputs[2] if len(node.inputs) > 2 else ""
    out = node.outputs[0]

    def step(env: Env) -> None:
        w = env[wn]
        if w.ndim != 3:
            raise ValueError("Conv weights are not 1-D kernels")
        env[out] = _conv1d(env[xn], w, env[bn] if bn else None, stride, pads, group)
    return step


def _clip(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]
    if len(node.inputs) > 1 and node.inputs[1]:
        x = np.maximum(x, env[node.inputs[1]]).astype(x.dtype, copy=False)
    if len(node.inputs) > 2 and node.inputs[2]:
        x = np.minimum(x, env[node.inputs[2]]).astype(x.dtype, copy=False)
    return x


def _unsqueeze(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]
    axes = _axes(node, env) or ()
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _squeeze(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]
    axes = _axes(node, env)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=axes)


def _reshape(node: Node, env: Env) -> np.ndarray:
    x, shape = env[node.inputs[0]], env[node.inputs[1]].reshape(-1)
    if _int(node, "allowzero", 0):
        raise _Unsupported("Reshape with allowzero")
    dims = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
    return x.reshape(dims)


def _shape(node: Node, env: Env) -> np.ndarray:
    s = env[node.inputs[0]].shape
    start, end = _int(node, "start", 0), node.attrs.get("end")
    return np.array(s[start:end if isinstance(end, int) else None], dtype=np.int64)


def _gather(node: Node, env: Env) -> np.ndarray:
    x, idx = env[node.inputs[0]], env[node.inputs[1]]
    return np.take(x, idx, axis=_int(node, "axis", 0))


def _cast(node: Node, env: Env) -> np.ndarray:
    to = _int(node, "to", 1)
    if to not in _CASTS:
        raise _Unsupported(f"Cast to type {to}")
    return env[node.inputs[0]].astype(_CASTS[to])


def _const_of_shape(node: Node, env: Env) -> np.ndarray:
    v = node.attrs.get("value")
    fill = v if isinstance(v, np.ndarray) else np.zeros(1, np.float32)
    return np.full(tuple(int(d) for d in env[node.inputs[0]].reshape(-1)), fill.reshape(-1)[0],
                   dtype=fill.dtype)


def _concat(node: Node, env: Env) -> np.ndarray:
    return np.concatenate([env[i] for i in node.inputs], axis=_int(node, "axis", 0))


def _flatten(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]
    a = _int(node, "axis", 1) % (x.ndim or 1)
    return x.reshape(int(np.prod(x.shape[:a])), -1)


def _transpose(node: Node, env: Env) -> np.ndarray:
    perm = node.attrs.get("perm")
    return np.transpose(env[node.inputs[0]], _ints(node, "perm") if perm is not None else None)


def _slice_node(node: Node, consts: Env) -> Step:
    """Slice; its index is worked out once when starts, ends, axes and steps are constants."""
    _only(node)
    x, out = node.inputs[0], node.outputs[0]
    rest = list(node.inputs[1:5]) + [""] * (5 - len(node.inputs))
    if not rest[0] or not rest[1]:
        raise _Unsupported("Slice without starts or ends")
    fixed = all(not i or i in consts for i in rest)
    cache: dict[int, tuple[slice, ...]] = {}

    def step(env: Env) -> None:
        v = env[x]
        index = cache.get(v.ndim)
        if index is None:
            a, k = (env[i] if i else None for i in rest[2:])
            index = _slice_index(v.ndim, env[rest[0]], env[rest[1]], a, k)
            if fixed:
                cache[v.ndim] = index
        env[out] = v[index]
    return step


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if b.size == 1 and float(b.reshape(-1)[0]) == 2.0:
        return a * a
    out: np.ndarray = np.power(a, b).astype(a.dtype, copy=False)
    return out


_Maker = Callable[[Node], Step]

_OPS: dict[str, _Maker] = {
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": _binary(np.divide), "Pow": _binary(_pow), "MatMul": _binary(np.matmul),
    "Equal": _binary(np.equal), "GreaterOrEqual": _binary(np.greater_equal),
    "Relu": _unary(lambda x: np.maximum(x, 0).astype(x.dtype, copy=False)),
    "Sigmoid": _unary(_sigmoid), "Sqrt": _unary(np.sqrt), "Log": _unary(np.log),
    "Neg": _unary(np.negative), "Identity": _unary(lambda x: x),
    "Gemm": _simple(_gemm, "alpha", "beta", "transA", "transB"),
    "Conv": _conv,
    "Clip": _simple(_clip), "Unsqueeze": _simple(_unsqueeze, "axes"),
    "Squeeze": _simple(_squeeze, "axes"), "Reshape": _simple(_reshape, "allowzero"),
    "Shape": _simple(_shape, "start", "end"), "Gather": _simple(_gather, "axis"),
    "Cast": _simple(_cast, "to"), "ConstantOfShape": _simple(_const_of_shape, "value"),
    "Concat": _simple(_concat, "axis"), "Flatten": _simple(_flatten, "axis"),
    "Transpose": _simple(_transpose, "perm"),
    "Pad": _pad,
    "ReduceMean": _reduce(_mean),
    "ReduceMax": _reduce(lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims)),
}


def _compile(graph: Graph, consts: Env) -> list[Step]:
    steps: list[Step] = []
    for node in graph.nodes:
        if node.op == "Constant":
            v = node.attrs.get("value")
            if set(node.attrs) != {"value"} or not isinstance(v, np.ndarray):
                raise _Unsupported(f"Constant with attributes {sorted(node.attrs)}")
            consts[node.outputs[0]] = v
        elif node.op == "If":
            steps.append(_if(node, consts))
        elif node.op == "LSTM":
            steps.append(_lstm_step(node))
        elif node.op == "Slice":
            steps.append(_slice_node(node, consts))
        elif node.op in _OPS:
            if len(node.outputs) != 1:
                raise _Unsupported(f"{node.op} with {len(node.outputs)} outputs")
            steps.append(_OPS[node.op](node))
        else:
            raise _Unsupported(f"operator {node.op}")
    return steps


def _if(node: Node, consts: Env) -> Step:
    then, other = node.attrs.get("then_branch"), node.attrs.get("else_branch")
    if not isinstance(then, Graph) or not isinstance(other, Graph) or len(node.attrs) != 2:
        raise _Unsupported("If without two branches")
    branches = []
    for g in (then, other):
        consts.update(g.inits)
        if len(g.outputs) != len(node.outputs):
            raise _Unsupported("If branch with a different number of outputs")
        branches.append((_compile(g, consts), g.outputs))
    cond, outs = node.inputs[0], node.outputs

    def step(env: Env) -> None:
        steps, names = branches[0] if bool(env[cond].reshape(-1)[0]) else branches[1]
        for s in steps:
            s(env)
        for out, name in zip(outs, names, strict=True):
            env[out] = env[name]
    return step


def _lstm_step(node: Node) -> Step:
    _only(node, "hidden_size", "direction", "input_forget", "layout")
    if node.attrs.get("direction", b"forward") != b"forward" or node.attrs.get("layout", 0) \
            or node.attrs.get("input_forget", 0) or len(node.inputs) > 7 \
            or (len(node.inputs) > 4 and node.inputs[4]) or len(node.outputs) != 3:
        raise _Unsupported("LSTM other than forward, without peepholes or sequence lengths")
    names = node.inputs + [""] * (7 - len(node.inputs))
    x, w, r, b, _, h0, c0 = names

    def step(env: Env) -> None:
        xs = env[x]
        hid = env[r].shape[-1]
        zeros = np.zeros((1, xs.shape[1], hid), np.float32)
        y, h, c = _lstm(xs, env[w], env[r], env[b] if b else None,
                        env[h0] if h0 else zeros, env[c0] if c0 else zeros)
        for name, value in zip(node.outputs, (y, h, c), strict=True):
            if name:
                env[name] = value
    return step


class Port(NamedTuple):
    """An input or output of a model, as onnxruntime's ``get_inputs()`` describes it."""

    name: str
    shape: list[int | None]


class NumpyGraph:
    """An ONNX graph compiled to numpy steps, called as an onnxruntime session is.

    Thread-safe as far as the graph goes: every call has its own intermediate values.
    """

    def __init__(self, graph: Graph, name: str = "model") -> None:
        self.name = name
        self._consts: Env = dict(graph.inits)
        try:
            self._steps = _compile(graph, self._consts)
        except _Unsupported as exc:
            raise ModelError(f"model {name} cannot run on numpy: {exc}") from exc
        self.outputs = list(graph.outputs)
        self._inputs = [Port(k, v) for k, v in graph.inputs.items()]
        shapes = graph.output_shapes or [[] for _ in graph.outputs]
        self._outputs = [Port(k, v) for k, v in zip(graph.outputs, shapes, strict=True)]

    def get_inputs(self) -> list[Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[Port]:
        return list(self._outputs)

    @classmethod
    def load(cls, path: Path) -> NumpyGraph:
        graph = load_graph(path)
        return cls(graph, path.name)

    def run(self, names: Sequence[str] | None, feeds: Env) -> list[np.ndarray]:
        """The outputs ``names`` (None: all) for ``feeds``, as onnxruntime's ``run``."""
        env = dict(self._consts)
        env.update(feeds)
        for step in self._steps:
            step(env)
        return [env[o] for o in (self.outputs if names is None else names)]
