"""The streaming embedding equals onnxruntime's embedding model, on its own and in the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.errors import ModelError
from edge.wake.embedding import StreamingEmbedding, parse_layers
from edge.wake.engine import EMB_STEP, EMB_WINDOW, Classifier, FeatureModels, StreamingEngine
from edge.wake.models import ModelStore
from edge.wake.onnx_reader import read_onnx
from tests.fixtures.audio import phrase, prose

TOL = 1e-4


@pytest.fixture(scope="module")
def features(store: ModelStore) -> FeatureModels:
    # onnxruntime: the streamed embedding is checked against onnxruntime's own model
    return FeatureModels.load(store.path("melspectrogram"), store.path("embedding"),
                              runtime="onnxruntime")


@pytest.fixture(scope="module")
def mixed() -> np.ndarray:
    """Over 60 s of wake words, prose, digital silence and quiet and louder pink noise.

    The quiet gaps are long enough for the -45 dBFS gate to skip frames: some by fewer
    frames than the classifiers see (a catch-up that keeps the stream going), some by
    more (a catch-up that restarts the stream).
    """
    audio = synth.concat([
        synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.5), phrase("alexa"),
        prose(20.0), synth.pink_noise(8.0, dbfs=-50.0), synth.silence(6.0),
        phrase("hey jarvis"), synth.pink_noise(4.0, dbfs=-30.0), prose(15.0, seed=1),
        synth.silence(4.0), phrase("alexa"), synth.pink_noise(6.0, dbfs=-60.0, seed=2),
        phrase("hey jarvis"), synth.silence(2.7), phrase("alexa"), synth.silence(3.6),
        phrase("hey jarvis"), synth.silence(2.0),
    ])
    assert len(audio) >= 60 * 16000
    return audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES]


def windows_of(spec: np.ndarray, start: int = 0) -> np.ndarray:
    starts = range(start, spec.shape[0] - EMB_WINDOW + 1, EMB_STEP)
    return np.stack([spec[i:i + EMB_WINDOW] for i in starts])


def test_stream_equals_onnxruntime(features: FeatureModels, mixed: np.ndarray) -> None:
    spec = features.melspectrogram(mixed.astype(np.float32))
    assert spec.shape[0] > 5000
    ref = features.embeddings(windows_of(spec))
    emb = features.streaming_embedding()
    got = [emb.prime(spec[:EMB_WINDOW])]
    for i in range(1, ref.shape[0]):
        end = EMB_WINDOW + i * EMB_STEP
        got.append(emb.step(spec[end - EMB_STEP:end])[0])
    assert np.abs(np.array(got) - ref).max() < TOL

    # Batches of rows, and a restart (reset + prime) at an offset that is not a multiple of 8.
    emb.reset()
    assert emb.prime(spec[:EMB_WINDOW]) == pytest.approx(ref[0], abs=TOL)
    batch = emb.step(spec[EMB_WINDOW:EMB_WINDOW + 40 * EMB_STEP])
    assert batch.shape == (40, 96)
    assert np.abs(batch - ref[1:41]).max() < TOL
    emb.reset()
    ref3 = features.embeddings(windows_of(spec, 3)[:60])
    got3 = np.vstack([emb.prime(spec[3:3 + EMB_WINDOW])[None],
                      emb.step(spec[3 + EMB_WINDOW:3 + EMB_WINDOW + 59 * EMB_STEP])])
    assert np.abs(got3 - ref3).max() < TOL


def test_step_needs_prime_and_whole_frames(features: FeatureModels) -> None:
    emb = features.streaming_embedding()
    rows = np.zeros((EMB_STEP, 32), np.float32)
    with pytest.raises(RuntimeError):
        emb.step(rows)
    emb.prime(np.ones((EMB_WINDOW, 32), np.float32))
    with pytest.raises(ValueError):
        emb.step(rows[:5])


@pytest.mark.parametrize("gate", [None, -45.0])
def test_engine_stream_equals_onnxruntime(features: FeatureModels, mixed: np.ndarray,
                                          store: ModelStore, gate: float | None) -> None:
    """Frame by frame from frame 0, across a reset and (gated) across catch-ups."""
    clf = [Classifier.load("hey_jarvis", store.path("hey_jarvis")),
           Classifier.load("alexa", store.path("alexa"))]
    ours = StreamingEngine(features, clf, idle_gate_dbfs=gate)
    ref = StreamingEngine(features, clf, idle_gate_dbfs=gate, streaming_embedding=False)
    assert ours.streaming and not ref.streaming
    calls = {"prime": 0, "step": 0, "batch": 0}
    prime, step = ours._stream.prime, ours._stream.step

    def count_prime(window: np.ndarray) -> np.ndarray:
        calls["prime"] += 1
        return prime(window)

    def count_step(rows: np.ndarray) -> np.ndarray:
        calls["step" if len(rows) == EMB_STEP else "batch"] += 1
        return step(rows)

    ours._stream.prime, ours._stream.step = count_prime, count_step
    frames = mixed.reshape(-1, FRAME_SAMPLES)
    reset_at = len(frames) // 2 + 3
    worst_emb = worst_score = 0.0
    peak = 0.0
    for i, frame in enumerate(frames):
        if i == reset_at:
            ours.reset()
            ref.reset()
        a, b = ours.process(frame), ref.process(frame)
        worst_score = max(worst_score, float(np.abs(a - b).max()))
        worst_emb = max(worst_emb, float(np.abs(ours._feat - ref._feat).max()))
        peak = max(peak, float(a.max()))
    assert worst_emb < TOL
    assert worst_score < 1e-3
    assert peak > 0.5  # the wake words were heard
    assert calls["step"] > 500
    if gate is None:
        assert calls["prime"] == 2 and calls["batch"] == 0  # frame 0 and after the reset
    else:
        assert ours.frames_skipped > 100 and ours.frames_skipped == ref.frames_skipped
        assert calls["prime"] > 3 and calls["batch"] > 0


def test_wrong_model_falls_back_to_onnxruntime(store: ModelStore, features: FeatureModels) -> None:
    with pytest.raises(ModelError, match="not the expected architecture"):
        StreamingEmbedding.load(store.path("hey_jarvis"))
    wrong = FeatureModels(features.mel, features.emb, features.mel_input, features.emb_input,
                          store.path("melspectrogram"))
    engine = StreamingEngine(wrong, [Classifier.load("hey_jarvis", store.path("hey_jarvis"))])
    assert not engine.streaming


class DriftingStream(StreamingEmbedding):
    """A stream that primes right and then drifts: what the engine's warm-up check is for."""

    def step(self, rows: np.ndarray) -> np.ndarray:
        return super().step(rows) + np.float32(0.01)


class DriftingFeatures(FeatureModels):
    def streaming_embedding(self) -> StreamingEmbedding:
        return DriftingStream(parse_layers(self.emb_path))


@pytest.mark.parametrize("runtime", ["auto", "onnxruntime"])
def test_warmup_check_refuses_a_drifting_stream(store: ModelStore, runtime: str) -> None:
    good = FeatureModels.load(store.path("melspectrogram"), store.path("embedding"),
                              runtime=runtime)
    classifier = [Classifier.load("hey_jarvis", store.path("hey_jarvis"))]
    assert StreamingEngine(good, classifier).streaming
    drifting = DriftingFeatures(good.mel, good.emb, good.mel_input, good.emb_input,
                                store.path("embedding"))
    assert not StreamingEngine(drifting, classifier).streaming


def test_reader_matches_the_graph(store: ModelStore) -> None:
    inits, nodes = read_onnx(Path(store.path("embedding")))
    assert sum(n.op == "Conv" for n in nodes) == 20
    assert inits["model/conv2d/Conv2D_weights_fused_bn"].shape == (24, 1, 3, 3)
    assert float(inits["const_fold_opt__287"].reshape(())) == pytest.approx(-0.4)
