"""Reference output of the stock models, recorded once with onnxruntime, checked at load.

The daemon runs the stock models with numpy (:mod:`edge.wake.numpy_graph`,
:mod:`edge.wake.embedding`) so that it never imports onnxruntime. Before a numpy
model is used, it runs on a fixed, seeded reference input, and its output must match
what onnxruntime gave for the same model file (named by its sha256) on that input.
That catches a numpy or BLAS that computes wrongly on this machine, and a model whose
graph reads the same but means something else, without loading onnxruntime. A file
with no recorded reference runs on onnxruntime.

The table is written by ``python -m edge.wake.golden models/*.onnx`` (which does use
onnxruntime), and tests/test_numpy_kernels.py checks it against onnxruntime again.

>>> check(path, "melspectrogram", graph)  # doctest: +SKIP
None
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.wake.manifest import sha256_file
from edge.wake.noise import Draws

KINDS = ("melspectrogram", "embedding", "classifier", "vad")
DIGEST_VALUES = 24
"""Output values kept per model (evenly spaced over all outputs), plus their mean."""
RTOL = 1e-4
ATOL = 1e-4
"""How close numpy must come to the recorded onnxruntime output (float32 summation order
differs; the embedding reaches about 70)."""


class Runnable(Protocol):
    """A model as onnxruntime's session presents it (inputs with .name and .shape)."""

    def get_inputs(self) -> Sequence[Any]: ...

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def _input_names(model: Runnable) -> list[str]:
    return [str(i.name) for i in model.get_inputs()]


def _classifier_frames(model: Runnable) -> int:
    shape = list(model.get_inputs()[0].shape)
    return int(shape[1]) if len(shape) == 3 and isinstance(shape[1], int) else 16


def reference_feeds(kind: str, model: Runnable) -> list[dict[str, np.ndarray]]:
    """The fixed reference inputs for a model of ``kind`` (:class:`~edge.wake.noise.Draws`:
    the same numbers on every machine, without importing ``numpy.random``)."""
    d = Draws(1234)
    names = _input_names(model)
    if kind == "melspectrogram":
        return [{names[0]: d.integers(-3000, 3000, (1, 1760)).astype(np.float32)},
                {names[0]: d.integers(-30, 30, (2, 1760)).astype(np.float32)}]
    if kind == "embedding":  # one window: every weight of the model is in its output
        return [{names[0]: d.uniform(-1.0, 4.0, (1, 76, 32, 1)).astype(np.float32)}]
    if kind == "classifier":
        n = _classifier_frames(model)
        return [{names[0]: (d.unit_normalish((1, n, 96)) * scale).astype(np.float32)}
                for scale in (0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0)]
    if kind == "vad":
        x = np.clip(d.unit_normalish((2, 1, 640)) * 0.1, -1, 1).astype(np.float32)
        h = (d.unit_normalish((2, 1, 64)) * 0.3).astype(np.float32)
        c = (d.unit_normalish((2, 1, 64)) * 0.3).astype(np.float32)
        zero = np.zeros_like(h)
        sr = np.array(16000, dtype=np.int64)
        return [{"input": x[0], "h": zero, "c": zero, "sr": sr},
                {"input": x[1], "h": h, "c": c, "sr": sr}]
    raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")


def digest(kind: str, model: Runnable) -> list[float]:
    """``DIGEST_VALUES`` evenly spaced values of all outputs on the reference input, and
    the mean of all of them."""
    outs = [o.astype(np.float64).reshape(-1) for f in reference_feeds(kind, model)
            for o in model.run(None, f)]
    flat = np.concatenate(outs)
    picks = np.linspace(0, flat.size - 1, min(DIGEST_VALUES, flat.size)).astype(int)
    return [float(v) for v in flat[picks]] + [float(flat.mean())]


def check(path: Path, kind: str, model: Runnable, sha: str | None = None) -> str | None:
    """None when ``model`` (the numpy version of the file ``path``, of sha256 ``sha``)
    gives the recorded reference output; else why not, in words."""
    sha = sha or sha256_file(path)
    ref = REFERENCES.get(sha)
    if ref is None:
        return f"no reference output is recorded for {path.name} (sha256 {sha[:12]}...)"
    if ref[0] != kind:
        return f"{path.name} is a {ref[0]} model, not a {kind} model"
    try:
        got = digest(kind, model)
    except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
        return f"numpy cannot run {path.name} on its reference input: {exc}"
    want = np.array(ref[1])
    if len(got) != len(want) or not np.allclose(got, want, rtol=RTOL, atol=ATOL):
        off = float(np.abs(np.array(got) - want).max()) if len(got) == len(want) else np.inf
        return f"numpy's output for {path.name} is off the reference by {off:g}"
    return None


def record(path: Path, kind: str) -> tuple[str, tuple[str, tuple[float, ...]]]:
    """The table entry for ``path``, computed with onnxruntime."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sha256_file(path), (kind, tuple(digest(kind, s)))


def _kind_of(path: Path) -> str:
    name = path.name
    if name.startswith("melspectrogram"):
        return "melspectrogram"
    if name.startswith("embedding"):
        return "embedding"
    if name.startswith("silero"):
        return "vad"
    return "classifier"


def main(argv: list[str]) -> int:
    """Print the table entries of the given model files (onnxruntime's output)."""
    for arg in argv:
        sha, (kind, values) = record(Path(arg), _kind_of(Path(arg)))
        print(f'    # {Path(arg).name}\n    "{sha}": ("{kind}", (')
        for i in range(0, len(values), 4):
            print("        " + " ".join(f"{v!r}," for v in values[i:i + 4]))
        print("    )),")
    return 0


REFERENCES: dict[str, tuple[str, tuple[float, ...]]] = {
    # melspectrogram.onnx
    "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f": ("melspectrogram", (
        76.73223114013672, 72.71465301513672, 73.69837951660156, 66.79255676269531,
        74.36902618408203, 72.05785369873047, 74.96309661865234, 69.67938995361328,
        33.414737701416016, 37.65629959106445, 30.388778686523438, 25.75939178466797,
        29.64551544189453, 29.76551055908203, 23.91080665588379, 29.807191848754883,
        29.136714935302734, 28.22865104675293, 31.24163818359375, 28.509716033935547,
        31.036136627197266, 29.843210220336914, 29.45506477355957, 30.818735122680664,
        43.901607769231,
    )),
    # embedding_model.onnx
    "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f": ("embedding", (
        -10.261075019836426, 11.244697570800781, -2.011368751525879, -4.011797904968262,
        3.879507303237915, -1.9337188005447388, -11.886648178100586, 2.428255558013916,
        -9.155082702636719, 32.46706008911133, 4.219727993011475, -9.866172790527344,
        -1.1519830226898193, 5.560922622680664, 18.248477935791016, 6.570741653442383,
        10.494714736938477, -4.728446960449219, 22.128625869750977, -24.987369537353516,
        12.391070365905762, 3.3849024772644043, 10.787014961242676, 26.985868453979492,
        1.5485371438165505,
    )),
    # alexa_v0.1.onnx
    "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e": ("classifier", (
        0.48756712675094604, 0.48747390508651733, 0.4864497780799866, 0.49307435750961304,
        0.4891907572746277, 0.48291540145874023, 0.5101719498634338, 0.49495965242385864,
        0.644389808177948, 0.8992375135421753, 0.5475430250167846,
    )),
    # hey_jarvis_v0.1.onnx
    "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb": ("classifier", (
        0.011985093355178833, 0.001147925853729248, 0.17179608345031738, 0.19959673285484314,
        0.995758056640625, 0.0009884238243103027, 0.35678115487098694, 0.9949257373809814,
        6.973743438720703e-06, 0.0030001401901245117, 0.27359863221645353,
    )),
    # hey_mycroft_v0.1.onnx
    "c2a311e8fa1338de89c31b3b46dc4dffd4af2f9a8d6ddead48893c2d301b1f18": ("classifier", (
        1.7881393432617188e-07, 0.0, 4.07099723815918e-05, 1.0,
        1.0, 1.0, 1.0, 1.0,
        1.0, 1.0, 0.7000040888786316,
    )),
    # hey_rhasspy_v0.1.onnx
    "5a9b3ed3be2910e35780e097905aa9f35a9c10038df47914cf2b3ec4d670f6ea": ("classifier", (
        0.9468318223953247, 0.9910268783569336, 0.7259330749511719, 0.017837733030319214,
        0.9791120290756226, 0.18391987681388855, 0.9902021288871765, 0.6982656717300415,
        0.9928179979324341, 0.34202587604522705, 0.686797308921814,
    )),
    # silero_vad.onnx
    "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28": ("vad", (
        0.03404290974140167, 0.21470464766025543, -0.20976485311985016, -0.07136715203523636,
        0.02470608986914158, 0.04878739267587662, -0.4857604503631592, -0.4871532618999481,
        -0.7001035809516907, -0.1619473099708557, -0.004139997065067291, -0.21322593092918396,
        -0.13537320494651794, -0.2958477735519409, 0.5005001425743103, -0.25494471192359924,
        0.1518302708864212, -0.6053889393806458, 0.5043743848800659, -0.08782793581485748,
        0.5105042457580566, 0.703755259513855, 1.143815517425537, -0.1100337952375412,
        0.047490653606378094,
    )),
}
"""sha256 of a model file -> (kind, :func:`digest` of onnxruntime's output)."""


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
