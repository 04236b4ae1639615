"""openWakeWord's melspectrogram model, run with numpy's FFT.

The model (``melspectrogram.onnx``, a torchlibrosa port) computes a short-time Fourier
transform as two 1-D convolutions whose 257 x 512 kernels are a window times the cosine
and the negated sine of the DFT basis (stride 160), squares and adds them, multiplies by
a 257 x 32 mel filter bank, and takes ``10 * log10`` of the result clipped at 1e-10,
floored at 80 dB below its maximum. :class:`MelSpectrogram` checks the graph node by
node and the kernels value by value (to float32 rounding), then computes the same with
one real FFT per frame: a fifth of the arithmetic of the convolutions.

The FFT sums in another order than the convolution, so values differ from
onnxruntime's by float32 rounding: about 1e-5 dB on values up to about 100 dB, up to
about 1e-3 dB in bins near the floor, 80 dB below the frame's loudest.

>>> mel = MelSpectrogram.load(Path("models/melspectrogram.onnx"))
>>> mel.run(None, {"input": samples[None]})[0].shape  # doctest: +SKIP
(1, 1, 8, 32)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge.errors import ModelError
from edge.wake.onnx_reader import Graph, Node, load_graph

_OPS = ["Unsqueeze", "Conv", "Conv", "Unsqueeze", "Transpose", "Unsqueeze", "Transpose",
        "Pow", "Pow", "Add", "MatMul", "Clip", "Log", "Mul", "Div", "Sub", "ReduceMax", "Sub",
        "Cast", "Clip"]
"""The graph's operators in order, Constant nodes left out."""
BASIS_TOLERANCE = 1e-6
"""How far a kernel value may be from window * cos (or -sin) of the DFT basis."""


class _Port(NamedTuple):
    name: str
    shape: list[int | None]


class MelSpectrogram:
    """The melspectrogram model on numpy, called as an onnxruntime session is."""

    def __init__(self, window: np.ndarray, hop: int, mel_w: np.ndarray, scale: float,
                 divisor: float, offset: float, amin: float, top_db: float,
                 input_name: str, output_name: str) -> None:
        self.window = window.astype(np.float32)
        self.n_fft = len(window)
        self.hop = hop
        self.mel_w = np.ascontiguousarray(mel_w, dtype=np.float32)
        self._scale = np.float32(scale)
        self._divisor = np.float32(divisor)
        self._offset = np.float32(offset)
        self._amin = np.float32(amin)
        self._top_db = np.float32(top_db)
        self._input, self._output = input_name, output_name

    @classmethod
    def load(cls, path: Path) -> MelSpectrogram:
        graph = load_graph(path)
        return cls.from_graph(graph, path.name)

    @classmethod
    def from_graph(cls, graph: Graph, name: str) -> MelSpectrogram:
        def fail(what: str) -> ModelError:
            return ModelError(f"model {name} is not the melspectrogram this code knows: {what}")

        consts = dict(graph.inits)
        nodes: list[Node] = []
        for n in graph.nodes:
            if n.op == "Constant" and isinstance(n.attrs.get("value"), np.ndarray):
                consts[n.outputs[0]] = n.attrs["value"]  # type: ignore[assignment]
            else:
                nodes.append(n)
        if [n.op for n in nodes] != _OPS or len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise fail(f"operators {[n.op for n in nodes]}")

        def scalar(node: Node, i: int) -> float:
            v = consts.get(node.inputs[i]) if len(node.inputs) > i else None
            if v is None or v.size != 1:
                raise fail(f"{node.op} input {i} is not a constant scalar")
            return float(v.reshape(-1)[0])

        (unsq, conv_re, conv_im, u_re, t_re, u_im, t_im, pow_re, pow_im, add, matmul, clip,
         log, mul, div, sub, rmax, sub_db, cast, clip_db) = nodes
        x = unsq.outputs[0]
        wr, wi = consts.get(conv_re.inputs[1]), consts.get(conv_im.inputs[1])
        if wr is None or wi is None or wr.shape != wi.shape or wr.ndim != 3 or wr.shape[1] != 1:
            raise fail("the STFT kernels are not constant (bins, 1, n_fft) tensors")
        bins, _, n_fft = wr.shape
        if bins != n_fft // 2 + 1:
            raise fail(f"{bins} kernels of {n_fft} taps is not a one-sided DFT")
        hop = None
        for conv in (conv_re, conv_im):
            a = conv.attrs
            if conv.inputs[0] != x or len(conv.inputs) != 2 or a.get("kernel_shape") != [n_fft] \
                    or a.get("pads", [0, 0]) != [0, 0] or a.get("dilations", [1]) != [1] \
                    or a.get("group", 1) != 1 or a.get("auto_pad", b"NOTSET") != b"NOTSET" \
                    or not isinstance(a.get("strides"), list):
                raise fail(f"Conv attributes {a}")
            stride = a["strides"]
            assert isinstance(stride, list)
            if hop is not None and stride != [hop]:
                raise fail("the two STFT convolutions have different strides")
            hop = int(stride[0])
        assert hop is not None
        window = wr[0, 0]
        # Tap n of the kernels is window[n] * exp(-2 pi i k n / n_fft) over the bins k: the
        # one-sided DFT of an impulse of height window[n] at n.
        basis = np.fft.rfft(np.diag(window.astype(np.float64)), axis=1).T
        if np.abs(wr[:, 0] - basis.real).max() > BASIS_TOLERANCE \
                or np.abs(wi[:, 0] - basis.imag).max() > BASIS_TOLERANCE:
            raise fail("the STFT kernels are not a window times the DFT basis")
        if scalar(unsq, 1) != 1 or scalar(u_re, 1) != 1 or scalar(u_im, 1) != 1 \
                or t_re.attrs.get("perm") != [0, 1, 3, 2] \
                or t_im.attrs.get("perm") != [0, 1, 3, 2] \
                or u_re.inputs[0] != conv_re.outputs[0] or u_im.inputs[0] != conv_im.outputs[0] \
                or scalar(pow_re, 1) != 2.0 or scalar(pow_im, 1) != 2.0 \
                or pow_re.inputs[0] != t_re.outputs[0] or pow_im.inputs[0] != t_im.outputs[0] \
                or sorted(add.inputs) != sorted([pow_re.outputs[0], pow_im.outputs[0]]):
            raise fail("the power spectrum is not re**2 + im**2 of the two convolutions")
        mel_w = consts.get(matmul.inputs[1])
        if matmul.inputs[0] != add.outputs[0] or mel_w is None or mel_w.ndim != 2 \
                or mel_w.shape[0] != bins:
            raise fail("the mel filter bank is not a constant (bins, mels) matrix")
        hi = consts.get(clip.inputs[2]) if len(clip.inputs) > 2 else None
        if hi is not None and np.isfinite(hi).any():
            raise fail("the power is clipped from above")
        if rmax.attrs.get("keepdims") != 0 or "axes" in rmax.attrs or len(rmax.inputs) != 1 \
                or cast.attrs.get("to") != 1 or clip_db.inputs[0] != sub.outputs[0] \
                or clip_db.inputs[1] != cast.outputs[0] \
                or (len(clip_db.inputs) > 2 and np.isfinite(consts[clip_db.inputs[2]]).any()) \
                or rmax.inputs[0] != sub.outputs[0] or sub_db.inputs[0] != rmax.outputs[0]:
            raise fail("the dB floor is not max - top_db over the whole output")
        chain = [(clip, matmul), (log, clip), (mul, log), (div, mul), (sub, div)]
        if any(a.inputs[0] != b.outputs[0] for a, b in chain) \
                or cast.inputs[0] != sub_db.outputs[0]:
            raise fail("the operators do not form one chain")
        name_in = next(iter(graph.inputs))
        if unsq.inputs[0] != name_in or clip_db.outputs[0] != graph.outputs[0]:
            raise fail("the graph's input or output is not the chain's")
        return cls(window, hop, mel_w, scalar(mul, 1), scalar(div, 1), scalar(sub, 1),
                   scalar(clip, 1), scalar(sub_db, 1), name_in, graph.outputs[0])

    def get_inputs(self) -> list[_Port]:
        return [_Port(self._input, [None, None])]

    def get_outputs(self) -> list[_Port]:
        return [_Port(self._output, [None, 1, None, self.mel_w.shape[1]])]

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Output (batch, 1, frames, mels) of input (batch, samples), as the model gives."""
        x = np.asarray(feeds[self._input], dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < self.n_fft:
            raise ValueError(f"input has shape {x.shape}; expected (batch, >= {self.n_fft})")
        n = (x.shape[1] - self.n_fft) // self.hop + 1
        s = x.strides
        frames = np.lib.stride_tricks.as_strided(
            x, (x.shape[0], n, self.n_fft), (s[0], s[1] * self.hop, s[1]), writeable=False)
        spec = np.fft.rfft(frames * self.window, axis=-1)
        power = spec.real * spec.real
        power += spec.imag * spec.imag
        mel = power.astype(np.float32, copy=False) @ self.mel_w
        np.maximum(mel, self._amin, out=mel)
        db = np.log(mel)
        db *= self._scale
        db /= self._divisor
        db -= self._offset
        floor = np.float32(db.max() - self._top_db) if db.size else np.float32(0)
        np.maximum(db, floor, out=db)
        return [db.reshape(x.shape[0], 1, n, -1)]
