"""The stock models on numpy equal onnxruntime, and the daemon never loads onnxruntime for them.

The numpy engine's scores against openwakeword itself, frame by frame, are in
tests/test_engine.py (its engine is built with the default runtime, numpy).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.errors import ModelError
from edge.wake import golden
from edge.wake.dense import DenseClassifier
from edge.wake.engine import Classifier, FeatureModels, StreamingEngine
from edge.wake.melspec import MelSpectrogram
from edge.wake.models import ModelStore
from edge.wake.numpy_graph import NumpyGraph
from edge.wake.onnx_reader import Graph, read_graph
from edge.wake.policy import ModelPolicy, detections_over
from edge.wake.runtime import load_model, on_numpy
from edge.wake.vad import SileroVad
from tests.fixtures.audio import phrase, prose

WAKE = ["alexa", "hey_jarvis", "hey_mycroft", "hey_rhasspy"]
ROOT = Path(__file__).resolve().parent.parent


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Wake phrases, prose, silence and quiet noise, whole frames."""
    audio = synth.concat([
        synth.silence(2.0), phrase("hey jarvis"), prose(6.0, seed=3), phrase("alexa"),
        synth.pink_noise(2.0, dbfs=-50.0), phrase("hey rhasspy"), synth.silence(1.0),
    ])
    return audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES]


def test_reader_reads_constants_subgraphs_and_ports(store: ModelStore) -> None:
    g = read_graph(Path(store.path("hey_jarvis")))
    assert g.inputs == {"x.1": [1, 16, 96]}
    assert g.outputs == ["53"] and g.output_shapes == [[1, 1]]
    branch = next(n for n in g.nodes if n.op == "If").attrs["then_branch"]
    assert isinstance(branch, Graph) and branch.outputs == ["p2"]
    threshold = next(n for n in g.nodes if n.op == "Constant" and n.outputs[0].endswith("50"))
    assert float(threshold.attrs["value"]) == 0.5  # type: ignore[arg-type]


def test_melspectrogram_equals_onnxruntime(store: ModelStore, speech: np.ndarray) -> None:
    path = Path(store.path("melspectrogram"))
    ours, ref = MelSpectrogram.load(path), session(path)
    x = speech.astype(np.float32)
    # one frame with context, as the device calls it; a batch; the whole stream at once
    frames = [x[i:i + 1760][None] for i in range(0, len(x) - 1760, 1280)]
    for feed in [*frames, np.stack([f[0] for f in frames[:40]]), x[None]]:
        got = ours.run(None, {"input": feed})[0]
        want = ref.run(None, {"input": feed})[0]
        assert got.shape == want.shape and got.dtype == want.dtype
        # dB up to about 100 (the engine divides by 10). Bins 80 dB below the loudest carry
        # float32 rounding of the whole frame's energy, in onnxruntime's sums as in the FFT.
        assert np.abs(got - want).max() < 2e-3


@pytest.mark.parametrize("name", WAKE)
def test_classifiers_equal_onnxruntime_on_real_features(store: ModelStore, speech: np.ndarray,
                                                         name: str) -> None:
    features = FeatureModels.load(store.path("melspectrogram"), store.path("embedding"),
                                  runtime="onnxruntime")
    spec = features.melspectrogram(speech.astype(np.float32))
    emb = features.embeddings(np.stack([spec[i:i + 76] for i in range(0, len(spec) - 76, 8)]))
    path = Path(store.path(name))
    ours, ref = DenseClassifier.load(path), session(path)
    n = ours.get_inputs()[0].shape[1]
    worst, scores = 0.0, []
    for i in range(n, len(emb)):
        feed = {ours.get_inputs()[0].name: emb[None, i - n:i]}
        got, want = ours.run(None, feed)[0], ref.run(None, feed)[0]
        assert got.shape == want.shape and got.dtype == np.float32
        worst = max(worst, float(np.abs(got - want).max()))
        scores.append(float(want.reshape(-1)[0]))
    assert worst < 1e-5
    assert max(scores) > 0.5 or name == "hey_mycroft"  # the phrases cross the threshold


def test_silero_equals_onnxruntime_with_its_state(store: ModelStore, speech: np.ndarray) -> None:
    path = Path(store.path("silero_vad"))
    ours, ref = SileroVad(NumpyGraph.load(path)), SileroVad(session(path))
    got = [ours.speech_probability(f) for f in speech.reshape(-1, FRAME_SAMPLES)]
    want = [ref.speech_probability(f) for f in speech.reshape(-1, FRAME_SAMPLES)]
    assert np.abs(np.array(got) - np.array(want)).max() < 1e-3
    assert max(want) > 0.5 and min(want) < 0.1  # speech and silence both seen


def test_recorded_reference_output_is_onnxruntimes(store: ModelStore) -> None:
    kinds = {"melspectrogram": "melspectrogram", "embedding": "embedding",
             "silero_vad": "vad", **{n: "classifier" for n in WAKE}}
    for name, kind in kinds.items():
        path = Path(store.path(name))
        sha, (recorded_kind, values) = golden.record(path, kind)
        assert golden.REFERENCES[sha] == (recorded_kind, values) or (
            golden.REFERENCES[sha][0] == kind
            and np.allclose(golden.REFERENCES[sha][1], values, rtol=1e-6, atol=1e-6)), name
        assert load_model(path, kind) is not None and on_numpy(load_model(path, kind)), name


def test_a_wrong_numpy_result_is_caught_at_load(store: ModelStore) -> None:
    path = Path(store.path("melspectrogram"))
    mel = MelSpectrogram.load(path)
    assert golden.check(path, "melspectrogram", mel) is None
    mel.mel_w = mel.mel_w * np.float32(1.01)  # a BLAS or a kernel that is 1 % off
    assert "off the reference" in str(golden.check(path, "melspectrogram", mel))
    assert "not a classifier" in str(golden.check(path, "classifier", mel))


def test_unknown_model_file_runs_on_onnxruntime(store: ModelStore, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    # The same classifier with a doc string appended: another file, with no reference output.
    own = tmp_path / "my_word.onnx"
    own.write_bytes(Path(store.path("hey_rhasspy")).read_bytes() + b"\x32\x04mine")
    with caplog.at_level(logging.INFO, logger="edge.wake.runtime"):
        clf = Classifier.load("my_word", own)
    assert not on_numpy(clf.session) and isinstance(clf.session, ort.InferenceSession)
    assert "my_word.onnx runs on onnxruntime: no reference output" in caplog.text
    stock = Classifier.load("hey_rhasspy", Path(store.path("hey_rhasspy")))
    x = np.random.RandomState(0).randn(16, 96).astype(np.float32)
    assert on_numpy(stock.session) and abs(stock.score(x) - clf.score(x)) < 1e-5


def test_runtime_onnxruntime_keeps_everything_on_onnxruntime(store: ModelStore) -> None:
    f = FeatureModels.load(store.path("melspectrogram"), store.path("embedding"),
                           runtime="onnxruntime")
    assert not on_numpy(f.mel) and not on_numpy(f.emb)
    assert not on_numpy(SileroVad.load(Path(store.path("silero_vad")), "onnxruntime")._s)
    with pytest.raises(ModelError, match="unknown model runtime 'tflite'; use one of auto"):
        Classifier.load("alexa", Path(store.path("alexa")), runtime="tflite")


def test_models_numpy_cannot_run_are_refused_with_the_reason(store: ModelStore) -> None:
    with pytest.raises(ModelError, match="embedding_model.onnx cannot run on numpy: Conv other"):
        NumpyGraph.load(Path(store.path("embedding")))
    with pytest.raises(ModelError, match="embedding_model.onnx is not a classifier this code"):
        DenseClassifier.load(Path(store.path("embedding")))
    with pytest.raises(ModelError, match="alexa_v0.1.onnx is not the melspectrogram this code"):
        MelSpectrogram.load(Path(store.path("alexa")))


def test_numpy_and_onnxruntime_engines_give_the_same_scores_and_detections(
        store: ModelStore) -> None:
    audio = synth.concat([synth.silence(1.0), phrase("hey jarvis"), prose(10.0, seed=5),
                          phrase("alexa"), synth.pink_noise(3.0, dbfs=-55.0),
                          phrase("hey rhasspy"), synth.silence(1.5)])
    engines = {}
    for runtime in ("auto", "onnxruntime"):
        f = FeatureModels.load(store.path("melspectrogram"), store.path("embedding"),
                               runtime=runtime)
        engines[runtime] = StreamingEngine(
            f, [Classifier.load(n, store.path(n), runtime=runtime) for n in WAKE],
            idle_gate_dbfs=-45.0)
    assert all(on_numpy(c.session) for c in engines["auto"].classifiers)
    n = len(audio) // FRAME_SAMPLES
    scores = {r: np.array([e.process(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
                           for i in range(n)]) for r, e in engines.items()}
    assert np.abs(scores["auto"] - scores["onnxruntime"]).max() < 1e-4
    policy = [ModelPolicy(w) for w in WAKE]
    found = detections_over(scores["auto"], policy)
    assert [(d.model, d.frame_index) for d in found] == \
        [(d.model, d.frame_index) for d in detections_over(scores["onnxruntime"], policy)]
    assert {d.model for d in found} >= {"hey_jarvis", "alexa", "hey_rhasspy"}


def test_the_daemon_path_imports_neither_onnxruntime_nor_numpy_random(
        store: ModelStore) -> None:
    # A fresh interpreter: this one has onnxruntime loaded by the tests above.
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from edge.config import WakeConfig
        from edge.wake.detector import build_detector
        from edge.wake.noise import Draws
        from edge.wake.vad import SileroVad
        from edge.wake.models import ModelStore
        store = ModelStore.default()
        det = build_detector(WakeConfig(models=("hey_jarvis", "alexa")), store)
        vad = SileroVad.load(store.path("silero_vad"))
        frame = (Draws(0).unit_normalish(({FRAME_SAMPLES},)) * 3000).astype(np.int16)
        for _ in range(20):
            det.engine.process(frame)
            vad.speech_probability(frame)
        print("onnxruntime" in sys.modules, "numpy.random" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
