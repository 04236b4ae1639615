"""openWakeWord's wake-word classifiers, run with numpy.

Every openWakeWord-format classifier we ship is a small multilayer perceptron over
the last N embeddings (N x 96, flattened): dense layers (ONNX ``Gemm``), each but the
last followed by an optional layer norm (exported as nine elementwise nodes) and a
ReLU, and a sigmoid at the end. hey_jarvis adds a verifier: when the score reaches a
threshold, a second perceptron over the same input gives the score instead (an
``If`` node). :class:`DenseClassifier` checks the graph node by node against that
shape and runs it as a handful of numpy calls, in the graph's own order of float32
operations (only the matrix products sum in another order).

>>> clf = DenseClassifier.load(Path("models/hey_jarvis_v0.1.onnx"))
>>> clf.run(None, {clf.get_inputs()[0].name: features[None]})[0]  # doctest: +SKIP
array([[0.0012]], dtype=float32)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge.errors import ModelError
from edge.wake.onnx_reader import Graph, Node, load_graph

_NORM = ("ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add")
"""A layer norm over the last axis, as PyTorch exports it."""


class _Port(NamedTuple):
    name: str
    shape: list[int | None]


class _Unknown(Exception):
    pass


@dataclass
class _Dense:
    """One dense layer: weights, bias, the layer norm and ReLU after it."""

    w: np.ndarray
    """(inputs, outputs), contiguous."""
    b: np.ndarray
    norm: tuple[np.ndarray, np.ndarray, np.float32, np.float32] | None
    """gamma, beta, epsilon and width of the layer norm that follows, if any."""
    relu: bool


@dataclass
class _Mlp:
    """Dense layers run one after another."""

    layers: list[_Dense]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        add = np.add.reduce  # np.mean costs more in Python than the sum in C
        for layer in self.layers:
            y = np.dot(x, layer.w)
            y += layer.b
            if layer.norm is not None:
                gamma, beta, eps, n = layer.norm
                d = y - add(y, axis=-1, keepdims=True) / n
                v = add(d * d, axis=-1, keepdims=True) / n
                v += eps
                d /= np.sqrt(v, out=v)
                d *= gamma
                d += beta
                y = d
            if layer.relu:
                np.maximum(y, 0.0, out=y)
            x = y
        np.negative(x, out=x)
        with np.errstate(over="ignore"):  # exp = inf for a very negative logit: the score is 0
            np.exp(x, out=x)
        x += 1.0
        return np.divide(1.0, x, out=x)


class _Reader:
    """Walks a graph's nodes (Constants folded away), checking each against the pattern."""

    def __init__(self, graph: Graph, consts: dict[str, np.ndarray]) -> None:
        self.consts = consts
        self.nodes: list[Node] = []
        for n in graph.nodes:
            v = n.attrs.get("value")
            if n.op == "Constant" and isinstance(v, np.ndarray):
                consts[n.outputs[0]] = v
            else:
                self.nodes.append(n)
        self.i = 0

    def take(self, op: str, first: str | None) -> Node:
        """The next node, which must be ``op`` reading ``first`` as its first input."""
        if self.i >= len(self.nodes):
            raise _Unknown(f"the graph ends where {op} was expected")
        n = self.nodes[self.i]
        if n.op != op or (first is not None and (not n.inputs or n.inputs[0] != first)) \
                or len(n.outputs) != 1:
            raise _Unknown(f"node {self.i} is {n.op} where {op} was expected")
        self.i += 1
        return n

    def peek(self) -> str | None:
        return self.nodes[self.i].op if self.i < len(self.nodes) else None

    def const(self, node: Node, i: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
        v = self.consts.get(node.inputs[i]) if len(node.inputs) > i else None
        if v is None or v.dtype != np.float32 or (shape is not None and v.shape != shape):
            raise _Unknown(f"{node.op} input {i} is not a float32 constant of shape {shape}")
        return v


def _mlp(r: _Reader, x: str) -> tuple[_Mlp, str]:
    """The perceptron from Flatten of ``x`` to its Sigmoid; returns it and its output name."""
    f = r.take("Flatten", x)
    if f.attrs.get("axis", 1) != 1:
        raise _Unknown("Flatten other than from axis 1")
    h = f.outputs[0]
    layers: list[_Dense] = []
    while True:
        g = r.take("Gemm", h)
        if g.attrs.get("transB") != 1 or g.attrs.get("transA", 0) != 0 \
                or g.attrs.get("alpha", 1.0) != 1.0 or g.attrs.get("beta", 1.0) != 1.0:
            raise _Unknown(f"Gemm attributes {g.attrs}")
        w = r.const(g, 1)
        if w.ndim != 2:
            raise _Unknown("Gemm weights are not a matrix")
        b = r.const(g, 2, (w.shape[0],))
        h = g.outputs[0]
        if r.peek() == "Sigmoid":
            layers.append(_Dense(np.ascontiguousarray(w.T), b, None, False))
            return _Mlp(layers), r.take("Sigmoid", h).outputs[0]
        norm = None
        if r.peek() == "ReduceMean":
            norm, h = _norm(r, h, w.shape[0])
        h = r.take("Relu", h).outputs[0]
        layers.append(_Dense(np.ascontiguousarray(w.T), b, norm, True))


_Norm = tuple[np.ndarray, np.ndarray, np.float32, np.float32]


def _norm(r: _Reader, y: str, width: int) -> tuple[_Norm, str]:
    mean = r.take("ReduceMean", y)
    d = r.take("Sub", y)
    sq = r.take("Pow", d.outputs[0])
    var = r.take("ReduceMean", sq.outputs[0])
    ve = r.take("Add", var.outputs[0])
    sd = r.take("Sqrt", ve.outputs[0])
    n = r.take("Div", d.outputs[0])
    g = r.take("Mul", n.outputs[0])
    out = r.take("Add", g.outputs[0])
    if any(m.attrs.get("axes") != [-1] or m.attrs.get("keepdims", 1) != 1 or len(m.inputs) != 1
           for m in (mean, var)) or d.inputs[1] != mean.outputs[0] \
            or float(r.const(sq, 1).reshape(-1)[0]) != 2.0 or r.const(sq, 1).size != 1 \
            or n.inputs[1] != sd.outputs[0] or r.const(ve, 1).size != 1:
        raise _Unknown("a layer norm that is not (y - mean) / sqrt(var + eps) * gamma + beta")
    gamma, beta = r.const(g, 1, (width,)), r.const(out, 1, (width,))
    eps = np.float32(r.const(ve, 1).reshape(-1)[0])
    return (gamma, beta, eps, np.float32(width)), out.outputs[0]


class DenseClassifier:
    """An openWakeWord classifier on numpy, called as an onnxruntime session is."""

    def __init__(self, mlp: _Mlp, verifier: tuple[np.float32, _Mlp] | None, input_name: str,
                 input_shape: list[int | None], output_name: str) -> None:
        self._mlp = mlp
        self._verifier = verifier
        self._input = _Port(input_name, input_shape)
        self._output = output_name

    @classmethod
    def load(cls, path: Path) -> DenseClassifier:
        graph = load_graph(path)
        try:
            return cls.from_graph(graph)
        except _Unknown as exc:
            raise ModelError(f"model {path.name} is not a classifier this code knows: {exc}") \
                from exc

    @classmethod
    def from_graph(cls, graph: Graph) -> DenseClassifier:
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise _Unknown("not one input and one output")
        x, shape = next(iter(graph.inputs.items()))
        r = _Reader(graph, dict(graph.inits))
        mlp, p = _mlp(r, x)
        verifier = None
        if r.peek() == "GreaterOrEqual":
            ge = r.take("GreaterOrEqual", p)
            threshold = r.const(ge, 1)
            cast = r.take("Cast", ge.outputs[0])
            node = r.take("If", cast.outputs[0])
            then, other = node.attrs.get("then_branch"), node.attrs.get("else_branch")
            if cast.attrs.get("to") != 9 or threshold.size != 1 or not isinstance(then, Graph) \
                    or not isinstance(other, Graph) or len(then.outputs) != 1:
                raise _Unknown("an If that is not a verifier over the same input")
            rt = _Reader(then, dict(graph.inits) | then.inits)
            vmlp, vout = _mlp(rt, x)
            ro = _Reader(other, {})
            ident = ro.take("Identity", p)
            if rt.peek() is not None or ro.peek() is not None or vout != then.outputs[0] \
                    or ident.outputs[0] != other.outputs[0]:
                raise _Unknown("the verifier's branches do more than score")
            verifier = (np.float32(threshold.reshape(-1)[0]), vmlp)
            p = node.outputs[0]
        if r.peek() is not None or p != graph.outputs[0]:
            raise _Unknown(f"unexpected {r.peek()} node after the score")
        return cls(mlp, verifier, x, shape, p)

    def get_inputs(self) -> list[_Port]:
        return [self._input]

    def get_outputs(self) -> list[_Port]:
        return [_Port(self._output, [1, 1])]

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The score (batch, 1) of features (batch, N, 96)."""
        x = np.asarray(feeds[self._input.name], dtype=np.float32)
        flat = x.reshape(x.shape[0], -1)
        p = self._mlp(flat)
        if self._verifier is not None:
            threshold, vmlp = self._verifier
            # The graph's If takes the batch's first score (a batch of one, as the model is).
            if p.reshape(-1)[0] >= threshold:
                p = vmlp(flat)
        return [p]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Scores (batch,) of many frames' features (batch, N, 96) at once, the verifier
        decided row by row, as one frame at a time would (``edge measure``, offline)."""
        flat = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
        p = self._mlp(flat).reshape(-1)
        if self._verifier is not None:
            threshold, vmlp = self._verifier
            rows = np.flatnonzero(p >= threshold)
            if len(rows):
                p[rows] = vmlp(flat[rows]).reshape(-1)
        return p
