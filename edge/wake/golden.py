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
    """The fixed reference inputs for a model of ``kind``."""
    rs = np.random.RandomState(1234)
    names = _input_names(model)
    if kind == "melspectrogram":
        return [{names[0]: rs.randint(-3000, 3000, (1, 1760)).astype(np.float32)},
                {names[0]: rs.randint(-30, 30, (2, 1760)).astype(np.float32)}]
    if kind == "embedding":
        return [{names[0]: rs.uniform(-1.0, 4.0, (2, 76, 32, 1)).astype(np.float32)}]
    if kind == "classifier":
        n = _classifier_frames(model)
        return [{names[0]: (rs.randn(1, n, 96) * scale).astype(np.float32)}
                for scale in (0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0)]
    if kind == "vad":
        x = np.clip(rs.randn(2, 1, 640) * 0.1, -1, 1).astype(np.float32)
        h = (rs.randn(2, 1, 64) * 0.3).astype(np.float32)
        c = (rs.randn(2, 1, 64) * 0.3).astype(np.float32)
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
        69.77730560302734, 66.74835968017578, 70.962646484375, 65.67237091064453,
        64.89630126953125, 73.14912414550781, 65.35491943359375, 72.46914672851562,
        36.11952209472656, 23.811662673950195, 29.347776412963867, 31.72146224975586,
        30.03677749633789, 33.819698333740234, 30.490114212036133, 26.242334365844727,
        27.025543212890625, 26.73772430419922, 30.07930564880371, 32.640769958496094,
        29.690732955932617, 32.08139419555664, 32.48414993286133, 32.86650848388672,
        43.781910133858524,
    )),
    # embedding_model.onnx
    "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f": ("embedding", (
        -3.8682172298431396, 0.6762332916259766, 8.15052318572998, -6.88413667678833,
        -7.376035690307617, 6.177446365356445, -0.5432887077331543, -20.214645385742188,
        14.004922866821289, 13.699075698852539, -6.39093017578125, 17.80950927734375,
        -3.062671184539795, -6.096141815185547, 5.413509368896484, -1.0075949430465698,
        38.0997314453125, -9.277238845825195, -0.24613285064697266, 2.1199631690979004,
        -4.992632865905762, -23.591506958007812, 5.316102027893066, 28.7052059173584,
        1.8478799473183851,
    )),
    # alexa_v0.1.onnx
    "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e": ("classifier", (
        0.4874621331691742, 0.488753080368042, 0.4886537790298462, 0.48730650544166565,
        0.48877787590026855, 0.4930437207221985, 0.504441499710083, 0.6154359579086304,
        0.7084701657295227, 0.005673617124557495, 0.47680183351039884,
    )),
    # hey_jarvis_v0.1.onnx
    "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb": ("classifier", (
        0.0001354515552520752, 0.003381013870239258, 0.00035431981086730957, 0.016056984663009644,
        6.070733070373535e-05, 0.0027652978897094727, 0.9979472160339355, 0.7138586044311523,
        0.4982874393463135, 4.32133674621582e-06, 0.22328513562679292,
    )),
    # hey_mycroft_v0.1.onnx
    "c2a311e8fa1338de89c31b3b46dc4dffd4af2f9a8d6ddead48893c2d301b1f18": ("classifier", (
        1.7881393432617188e-07, 9.834766387939453e-07, 0.8893216848373413, 0.8160454034805298,
        0.5166415572166443, 0.9999999403953552, 1.0, 1.0,
        1.0, 1.0, 0.7222009748220444,
    )),
    # hey_rhasspy_v0.1.onnx
    "5a9b3ed3be2910e35780e097905aa9f35a9c10038df47914cf2b3ec4d670f6ea": ("classifier", (
        0.8979333639144897, 0.972869873046875, 0.9340587854385376, 0.9656563997268677,
        0.5059283971786499, 0.9829195737838745, 0.9406406879425049, 0.14782413840293884,
        0.9897979497909546, 0.003204166889190674, 0.7340833336114884,
    )),
    # silero_vad.onnx
    "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28": ("vad", (
        0.037362053990364075, -0.12117550522089005, -0.2467373162508011, 0.16621626913547516,
        0.034787893295288086, 0.07512503862380981, -0.8458583354949951, -0.4831691086292267,
        -1.1683049201965332, -0.13665615022182465, 0.013463832437992096, -0.011168822646141052,
        -0.03449973091483116, -0.41211238503456116, 0.5175741314888, -0.09428537636995316,
        0.43225646018981934, -0.36721792817115784, 0.41375812888145447, 0.3338049054145813,
        -0.15866117179393768, 0.07010075449943542, 0.6906373500823975, -0.4161321222782135,
        0.039180254508949686,
    )),
}
"""sha256 of a model file -> (kind, :func:`digest` of onnxruntime's output)."""


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
