"""A small interpreter for microWakeWord's int8 streaming TFLite graphs.

The graph is compiled once into a list of steps (closures over preallocated constants):
the convolutions' weights become matrices with the input zero point folded into the
bias, the slices become Python slices, and the streaming state (VAR_HANDLE,
READ_VARIABLE, ASSIGN_VARIABLE) becomes a dict of arrays that the CALL_ONCE
initialisation subgraph fills on :meth:`MicroGraph.reset`. An operator or option the
kernels do not implement is refused at load with :class:`UnsupportedGraph`.

Several steps at once (:meth:`MicroGraph.invoke_steps`): a streaming model is a stack of
convolutions over time, each keeping the last few rows of its input as state. Fed T
steps of input at once, every tensor simply grows by ``(T - 1) * rate`` rows along time,
where ``rate`` is the rows one step adds to it (3 at the input, 1 after the first
convolution, 0 for the state), and each convolution, whose stride equals its input's
rate, gives T rows where it gave one. The slices that write the state back keep the last
rows; the others keep their distance from both ends. The compiler works out each
tensor's rate and whether the graph has this shape; where it does not, steps run one at
a time. Either way the arithmetic per output is the same integer arithmetic.

Why one module of over 400 lines: every kernel both computes and records its output's
time rate, and whether the graph can batch is decided across all of them; split by
operator family, the rule for how a tensor grows with the steps would live in several
places, and it must be exactly one rule.

>>> graph = MicroGraph(read_tflite(path))  # doctest: +SKIP
>>> graph.invoke(np.zeros((1, 3, 40), np.int8))  # doctest: +SKIP
array([[0]], dtype=uint8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge.wake.micro import ops
from edge.wake.micro.tflite import Operator, Tensor, TfliteModel

Values = list[object]
Step = Callable[[Values], None]
_QRANGE = {np.int8: (-128, 127), np.uint8: (0, 255), np.int16: (-32768, 32767)}


class UnsupportedGraph(ValueError):
    """The graph uses an operator, type or option this interpreter does not implement."""


def _qparams(t: Tensor) -> tuple[float, int]:
    if t.scale.size == 0:
        raise UnsupportedGraph(f"tensor {t.name!r} is not quantized")
    return float(t.scale[0]), int(t.zero_point[0]) if t.zero_point.size else 0


def _qrange(t: Tensor) -> tuple[int, int]:
    if t.dtype not in _QRANGE:
        raise UnsupportedGraph(f"tensor {t.name!r} has type {t.dtype}; expected int8 or uint8")
    return _QRANGE[t.dtype]


def _const(t: Tensor) -> np.ndarray:
    if t.data is None:
        raise UnsupportedGraph(f"tensor {t.name!r} must be a constant")
    return t.data


def _opt(op: Operator, index: int, fmt: str, default: int = 0) -> int:
    return int(op.options.scalar(index, fmt, default)) if op.options else default


def _array(v: Values, i: int) -> np.ndarray:
    x = v[i]
    assert isinstance(x, np.ndarray)
    return x


class _Compiler:
    def __init__(self, tensors: Sequence[Tensor], variables: dict[str, np.ndarray],
                 handles: dict[int, str], consumers: dict[int, list[str]],
                 rates: dict[int, int]) -> None:
        self.t = tensors
        self.variables = variables
        self.handles = handles
        self.consumers = consumers
        self.rate = rates
        """Rows along time (axis 1; axis 0 once flattened) one more step adds to a tensor."""
        self.batchable = True
        """Whether the graph has the shape that several steps can run at once."""

    def compile(self, op: Operator) -> Step | None:
        kernel = getattr(self, "_" + op.code.lower(), None)
        if kernel is None:
            raise UnsupportedGraph(f"operator {op.code} is not implemented")
        step: Step | None = kernel(op)
        return step

    def _r(self, index: int) -> int:
        return self.rate.get(index, 0)

    def _single(self, why: bool) -> None:
        """Where ``why``, steps must run one at a time."""
        if why:
            self.batchable = False

    # -- state ------------------------------------------------------------------------

    def _var_handle(self, op: Operator) -> None:
        name = op.options.string(1) if op.options else ""
        self.handles[op.outputs[0]] = name or self.t[op.outputs[0]].name
        return None

    def _call_once(self, op: Operator) -> None:
        return None  # the initialisation subgraph runs on reset

    def _key(self, index: int) -> str:
        if index not in self.handles:
            raise UnsupportedGraph(f"tensor {self.t[index].name!r} is no VAR_HANDLE's")
        return self.handles[index]

    def _read_variable(self, op: Operator) -> Step:
        key, out, variables = self._key(op.inputs[0]), op.outputs[0], self.variables

        def step(v: Values) -> None:
            v[out] = variables[key]
        return step

    def _assign_variable(self, op: Operator) -> Step:
        key, src, variables = self._key(op.inputs[0]), op.inputs[1], self.variables
        shape = self.t[src].shape
        self._single(self._r(src) != 0)

        def step(v: Values) -> None:
            variables[key] = _array(v, src).reshape(shape)
        return step

    # -- data movement ----------------------------------------------------------------

    def _reshape(self, op: Operator) -> Step:
        src, out = op.inputs[0], op.outputs[0]
        ishape, oshape, r = self.t[src].shape, self.t[out].shape, self._r(src)
        if r and len(ishape) >= 2 and len(oshape) >= 2 and ishape[:2] == oshape[:2] == (
                1, ishape[1]) and np.prod(ishape[2:]) == np.prod(oshape[2:]):
            dynamic = (1, -1) + tuple(oshape[2:])  # time stays on axis 1
            self.rate[out] = r

            def step(v: Values) -> None:
                v[out] = _array(v, src).reshape(dynamic)
            return step
        if r and len(ishape) >= 2 and ishape[0] == 1 and oshape == (1, int(np.prod(ishape))):
            rows, rest = ishape[1], int(np.prod(ishape[2:]))
            self.rate[out] = 1  # the last ``rows`` rows, flattened: one window a step
            windows: dict[int, np.ndarray] = {}

            def flatten(v: Values) -> None:
                x = _array(v, src)
                if x.shape[1] == rows:
                    v[out] = x.reshape(oshape)
                    return
                flat = x.reshape(-1, rest)
                n = flat.shape[0]
                if n not in windows:
                    windows[n] = (np.arange(0, n - rows + 1, r)[:, None]
                                  + np.arange(rows)[None, :])
                w = flat[windows[n]]
                v[out] = w.reshape(w.shape[0], rows * rest)
            return flatten
        self._single(r != 0)

        def static(v: Values) -> None:
            v[out] = _array(v, src).reshape(oshape)
        return static

    def _concatenation(self, op: Operator) -> Step:
        out_t = self.t[op.outputs[0]]
        axis = _opt(op, 0, "i") % len(out_t.shape)
        if _opt(op, 1, "b"):
            raise UnsupportedGraph("CONCATENATION with a fused activation")
        oscale, ozp = _qparams(out_t)
        for i in op.inputs:
            if _qparams(self.t[i]) != (oscale, ozp):
                raise UnsupportedGraph("CONCATENATION of inputs quantized unlike its output")
        srcs, out = list(op.inputs), op.outputs[0]
        rates = [self._r(i) for i in srcs]
        if axis == 1:
            self.rate[out] = sum(rates)
        else:
            self._single(len(set(rates)) > 1)
            self.rate[out] = max(rates)

        def step(v: Values) -> None:
            v[out] = np.concatenate([_array(v, i) for i in srcs], axis=axis)
        return step

    def _strided_slice(self, op: Operator) -> Step:
        x = self.t[op.inputs[0]]
        begin, end, strides = (_const(self.t[i]).tolist() for i in op.inputs[1:4])
        bmask, emask = _opt(op, 0, "i"), _opt(op, 1, "i")
        if _opt(op, 2, "i") or _opt(op, 3, "i"):
            raise UnsupportedGraph("STRIDED_SLICE with an ellipsis or new-axis mask")
        shrink, offset = _opt(op, 4, "i"), _opt(op, 5, "b")
        src, out = op.inputs[0], op.outputs[0]
        r = self._r(src)
        index: list[slice | int] = []
        for d in range(len(x.shape)):
            b, e, s = begin[d], end[d], strides[d]
            if offset:
                e = b + e
            if shrink >> d & 1:
                index.append(b)
                continue
            index.append(slice(None if bmask >> d & 1 else b, None if emask >> d & 1 else e, s))
        shape = self.t[out].shape
        probe = np.zeros(x.shape, np.int8)[tuple(index)]
        if probe.size != int(np.prod(shape)):
            raise UnsupportedGraph(f"STRIDED_SLICE of {x.shape} gives {probe.shape}, not {shape}")
        if r and len(x.shape) > 1 and isinstance(index[1], slice) and not shrink:
            lo, hi, step_ = index[1].indices(x.shape[1])
            length = x.shape[1]
            self._single(step_ != 1)
            if all(c == "ASSIGN_VARIABLE" for c in self.consumers.get(out, [])):
                index[1] = slice(lo - length, hi - length or None)  # the state: the last rows
                self.rate[out] = 0
            else:
                index[1] = slice(lo, hi - length or None)  # one window more per step
                self.rate[out] = r
            key = tuple(index)

            def timed(v: Values) -> None:
                v[out] = _array(v, src)[key]
            return timed
        self._single(r != 0)
        key = tuple(index)

        def step(v: Values) -> None:
            v[out] = _array(v, src)[key].reshape(shape)
        return step

    def _split_v(self, op: Operator) -> Step:
        x = self.t[op.inputs[0]]
        sizes = _const(self.t[op.inputs[1]]).tolist()
        axis = int(_const(self.t[op.inputs[2]]).reshape(-1)[0]) % len(x.shape)
        if -1 in sizes:
            sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
        bounds = np.cumsum(sizes)[:-1].tolist()
        src, outs = op.inputs[0], list(op.outputs)
        self._single(axis == 1 and self._r(src) != 0)
        for o in outs:
            self.rate[o] = self._r(src)

        def step(v: Values) -> None:
            for o, part in zip(outs, np.split(_array(v, src), bounds, axis=axis), strict=True):
                v[o] = part
        return step

    # -- arithmetic -------------------------------------------------------------------

    def _requant(self, x: Tensor, w: Tensor, out: Tensor, fused: int,
                 upward: bool = False) -> ops.Requantizer:
        xs, _ = _qparams(x)
        os_, ozp = _qparams(out)
        if w.scale.size == 0:
            raise UnsupportedGraph(f"weights {w.name!r} are not quantized")
        if w.zero_point.size and np.any(w.zero_point != 0):
            raise UnsupportedGraph(f"weights {w.name!r} are not symmetrically quantized")
        qmin, qmax = _qrange(out)
        lo, hi = ops.activation_range(fused, os_, ozp, qmin, qmax)
        real = np.float64(xs) * w.scale.astype(np.float64) / np.float64(os_)
        if not np.all(np.isfinite(real) & (real > 0)):
            raise UnsupportedGraph(f"weights {w.name!r} have a scale that is not positive")
        return ops.Requantizer(real, ozp, lo, hi, upward)

    def _conv(self, op: Operator, depthwise: bool) -> Step:
        x, w, out = self.t[op.inputs[0]], self.t[op.inputs[1]], self.t[op.outputs[0]]
        bias_t = self.t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        wq = _const(w).astype(np.int64)
        padding, sw, sh = _opt(op, 0, "b"), _opt(op, 1, "i", 1), _opt(op, 2, "i", 1)
        if depthwise:
            mult, fused = _opt(op, 3, "i", 1), _opt(op, 4, "b")
            dw, dh = _opt(op, 5, "i", 1), _opt(op, 6, "i", 1)
        else:
            mult, fused = 1, _opt(op, 3, "b")
            dw, dh = _opt(op, 4, "i", 1), _opt(op, 5, "i", 1)
        if len(x.shape) != 4 or x.shape[0] != 1:
            raise UnsupportedGraph(f"{op.code} of input shape {x.shape}")
        _, h, wid, c = x.shape
        o, kh, kw, i = wq.shape
        if depthwise and (o != 1 or i != c * mult):
            raise UnsupportedGraph(f"DEPTHWISE_CONV_2D weights {wq.shape} for {c} channels")
        if not depthwise and i != c:
            raise UnsupportedGraph(f"CONV_2D weights {wq.shape} for {c} input channels")
        _, xzp = _qparams(x)
        pads = ((0, 0), (0, 0))
        if padding == 0:  # SAME
            pads = (ops.same_padding(h, kh, sh, dh), ops.same_padding(wid, kw, sw, dw))
        hp, wp = h + sum(pads[0]), wid + sum(pads[1])
        idx = ops.patch_index(hp, wp, kh, kw, (sh, sw), (dh, dw))
        n_out = o if not depthwise else i
        bias = _const(bias_t).astype(np.int64) if bias_t is not None else np.zeros(n_out, np.int64)
        rq = self._requant(x, w, out, fused, upward=depthwise)
        src, dst, shape = op.inputs[0], op.outputs[0], out.shape
        padded = any(any(p) for p in pads)
        full_pads = ((0, 0), pads[0], pads[1], (0, 0))
        r = self._r(src)
        # Over time: one window over the whole step's rows, whose stride is the rows a step adds.
        timed = (r > 0 and not padded and wid == kw == 1 and mult == 1 and idx.shape[0] == 1
                 and sh == r and (h - dh * (kh - 1) - 1) < sh)
        self._single(r > 0 and not timed)
        if timed:
            self.rate[dst] = 1
        span = dh * (kh - 1) + 1
        windows: dict[int, np.ndarray] = {}

        def taps_of(rows: np.ndarray) -> np.ndarray:
            """(steps, kh, c): the rows under the kernel at each step, gathered by index."""
            n = rows.shape[0]
            if n not in windows:
                starts = np.arange(0, n - span + 1, sh)
                windows[n] = starts[:, None] + np.arange(0, span, dh)[None, :]
            return rows[windows[n]]
        if depthwise:
            taps = wq.reshape(kh * kw, i)
            bias = bias - xzp * taps.sum(axis=0)
            chan = np.arange(i) // mult

            def step(v: Values) -> None:
                xa = _array(v, src)
                if timed:
                    rows = xa.reshape(-1, c)
                    if rows.shape[0] == kh and dh == 1:
                        acc = (rows * taps).sum(axis=0)
                    else:
                        acc = (taps_of(rows) * taps).sum(axis=1)
                    v[dst] = rq(acc + bias).astype(np.int8).reshape(1, -1, 1, i)
                    return
                if padded:
                    xa = np.pad(xa, full_pads, constant_values=xzp)
                patches = xa.reshape(hp * wp, c)[idx][:, :, chan].astype(np.int64)
                acc = (patches * taps).sum(axis=1)
                v[dst] = rq(acc + bias).astype(np.int8).reshape(shape)
        else:
            mat = wq.reshape(o, kh * kw * i).T.astype(np.float64)
            bias = bias - xzp * wq.reshape(o, -1).sum(axis=1)

            def step(v: Values) -> None:
                xa = _array(v, src)
                if timed:
                    rows = xa.reshape(-1, c)
                    if rows.shape[0] == kh and dh == 1:
                        patches = rows.reshape(1, -1)
                    else:
                        win = taps_of(rows)
                        patches = win.reshape(win.shape[0], -1)
                else:
                    if padded:
                        xa = np.pad(xa, full_pads, constant_values=xzp)
                    patches = xa.reshape(hp * wp, c)[idx].reshape(idx.shape[0], -1)
                # float64 sums of int8 products are exact (far below 2**53) and use BLAS
                acc = (patches @ mat).astype(np.int64)
                out_ = rq(acc + bias).astype(np.int8)
                v[dst] = out_.reshape(1, -1, 1, o) if timed else out_.reshape(shape)
        return step

    def _conv_2d(self, op: Operator) -> Step:
        return self._conv(op, depthwise=False)

    def _depthwise_conv_2d(self, op: Operator) -> Step:
        return self._conv(op, depthwise=True)

    def _fully_connected(self, op: Operator) -> Step:
        x, w, out = self.t[op.inputs[0]], self.t[op.inputs[1]], self.t[op.outputs[0]]
        bias_t = self.t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        wq = _const(w).astype(np.int64)
        if _opt(op, 1, "b"):
            raise UnsupportedGraph("FULLY_CONNECTED with shuffled weights")
        _, xzp = _qparams(x)
        bias = _const(bias_t).astype(np.int64) if bias_t is not None else 0
        bias = bias - xzp * wq.sum(axis=1)
        mat = wq.T.astype(np.float64)
        rq = self._requant(x, w, out, _opt(op, 0, "b"))
        src, dst, k = op.inputs[0], op.outputs[0], mat.shape[0]
        if len(out.shape) != 2 or out.shape[0] != 1:
            raise UnsupportedGraph(f"FULLY_CONNECTED output shape {out.shape}")
        self.rate[dst] = self._r(src)

        def step(v: Values) -> None:
            acc = (_array(v, src).reshape(-1, k) @ mat).astype(np.int64)
            v[dst] = rq(acc + bias).astype(np.int8)  # (steps, units)
        return step

    def _logistic(self, op: Operator) -> Step:
        x, out = self.t[op.inputs[0]], self.t[op.outputs[0]]
        if x.dtype is not np.int8 or out.dtype is not np.int8:
            raise UnsupportedGraph("LOGISTIC other than int8 to int8")
        table = ops.logistic_table(*_qparams(x), *_qparams(out))
        src, dst = op.inputs[0], op.outputs[0]
        self.rate[dst] = self._r(src)

        def step(v: Values) -> None:
            v[dst] = table[_array(v, src).astype(np.int64) + 128]
        return step

    def _quantize(self, op: Operator) -> Step:
        x, out = self.t[op.inputs[0]], self.t[op.outputs[0]]
        xs, xzp = _qparams(x)
        os_, ozp = _qparams(out)
        lo, hi = _qrange(out)
        _qrange(x)
        if not (np.isfinite(xs / os_) and xs / os_ > 0):
            raise UnsupportedGraph(f"QUANTIZE of tensor {x.name!r} has a bad scale")
        rq = ops.Requantizer(np.array([xs / os_]), ozp, lo, hi)
        src, dst, dtype = op.inputs[0], op.outputs[0], out.dtype
        self.rate[dst] = self._r(src)

        def step(v: Values) -> None:
            v[dst] = rq(_array(v, src).astype(np.int64) - xzp).astype(dtype)
        return step


class MicroGraph:
    """One streaming model: :meth:`invoke` takes one int8 input step and keeps the state."""

    def __init__(self, model: TfliteModel) -> None:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise UnsupportedGraph("expected one input and one output")
        self.model = model
        self.input = model.tensors[model.inputs[0]]
        self.output = model.tensors[model.outputs[0]]
        _qrange(self.input)
        _qrange(self.output)
        if len(self.input.shape) < 2 or self.input.shape[0] != 1:
            raise UnsupportedGraph(f"input shape {self.input.shape}; expected [1, rows, ...]")
        self.input_scale, self.input_zero_point = _qparams(self.input)
        self.output_scale, self.output_zero_point = _qparams(self.output)
        self._variables: dict[str, np.ndarray] = {}
        handles: dict[int, str] = {}
        consumers: dict[int, list[str]] = {}
        for op in model.operators:
            for i in op.inputs:
                consumers.setdefault(i, []).append(op.code)
        main = _Compiler(model.tensors, self._variables, handles, consumers,
                         {model.inputs[0]: self.input.shape[1]})
        self._steps = [s for s in (main.compile(op) for op in model.operators) if s]
        self.batchable = main.batchable and main.rate.get(model.outputs[0], 0) > 0
        """Whether :meth:`invoke_steps` runs several steps in one pass."""
        self._init: list[tuple[list[Step], Values]] = []
        for op in model.operators:
            if op.code == "CALL_ONCE":
                index = _opt(op, 0, "i")
                if not 0 < index < len(model.subgraphs):
                    raise UnsupportedGraph(f"CALL_ONCE names the missing subgraph {index}")
                tensors = model.subgraph_tensors[index]
                c = _Compiler(tensors, self._variables, {}, {}, {})
                steps = [s for s in (c.compile(o) for o in model.subgraphs[index]) if s]
                self._init.append((steps, [t.data for t in tensors]))
        self._base: Values = [t.data for t in model.tensors]
        self.reset()
        missing = set(handles.values()) - set(self._variables)
        if missing:
            raise UnsupportedGraph(f"state {sorted(missing)} is never initialised")

    def reset(self) -> None:
        """Back to the initial streaming state (as after CALL_ONCE)."""
        self._variables.clear()
        for steps, base in self._init:
            values = list(base)
            for s in steps:
                s(values)
        for key, value in self._variables.items():  # copies: a zeroed state must not zero
            self._variables[key] = value.copy()     # the constants it starts from

    def state(self) -> dict[str, np.ndarray]:
        """The streaming state: each variable's current value (read-only views)."""
        return dict(self._variables)

    def wipe(self) -> None:
        """Overwrite the streaming state (it holds features of the audio)."""
        for value in self._variables.values():
            if value.flags.writeable:
                value.fill(0)

    def _run(self, x: np.ndarray) -> np.ndarray:
        values = list(self._base)
        values[self.model.inputs[0]] = x
        for s in self._steps:
            s(values)
        return _array(values, self.model.outputs[0])

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """The output tensor for one input tensor (both quantized, as the model declares)."""
        return self._run(x.reshape(self.input.shape).astype(self.input.dtype)).reshape(
            self.output.shape)

    def invoke_steps(self, x: np.ndarray) -> np.ndarray:
        """The outputs (steps,) of consecutive steps whose input rows are stacked along
        time, as one pass where the graph allows it (the same numbers either way)."""
        per_step = self.input.shape[1]
        rows = x.reshape((-1,) + self.input.shape[2:]).astype(self.input.dtype)
        steps = rows.shape[0] // per_step
        if not self.batchable:
            return np.array([self.invoke(rows[k * per_step:(k + 1) * per_step]).reshape(-1)[0]
                             for k in range(steps)])
        out = self._run(rows[:steps * per_step][None])
        return out.reshape(steps, -1)[:, 0]
