"""The lean engine against openwakeword 0.6.0 itself, on the same real models."""

from __future__ import annotations

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.errors import AudioFormatError, ModelError
from edge.wake.engine import Classifier, FeatureModels, StreamingEngine
from edge.wake.models import ModelStore
from edge.wake.policy import ModelPolicy, detections_over
from edge.wake.upstream import UpstreamEngine
from tests.fixtures.audio import phrase, prose

WAKE = ["alexa", "hey_jarvis", "hey_mycroft", "hey_rhasspy"]


def make_engine(store: ModelStore, names: list[str] = WAKE, gate: float | None = None
                ) -> StreamingEngine:
    features = FeatureModels.load(store.path("melspectrogram"), store.path("embedding"))
    return StreamingEngine(features, [Classifier.load(n, store.path(n)) for n in names],
                           idle_gate_dbfs=gate)


def frames(samples: np.ndarray) -> list[np.ndarray]:
    n = len(samples) // FRAME_SAMPLES
    return [samples[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(n)]


def same_detections(a: list, b: list) -> bool:  # type: ignore[type-arg]
    """The same models at the same frames, with peak scores equal within 1e-3."""
    return [(d.model, d.frame_index) for d in a] == [(d.model, d.frame_index) for d in b] and \
        all(abs(x.score - y.score) < 1e-3 for x, y in zip(a, b, strict=True))


def score_matrix(engine, samples: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([engine.process(f) for f in frames(samples)])


@pytest.fixture(scope="module")
def mixed() -> np.ndarray:
    """Over 60 s of speech, silence, quiet noise and the wake phrases."""
    s = synth.silence
    audio = synth.concat([
        s(1.0), phrase("hey jarvis"), s(1.5), prose(20.0, seed=1), s(2.0), phrase("alexa"),
        s(1.0), synth.pink_noise(8.0, -50.0, seed=3), phrase("hey rhasspy"), s(1.5),
        prose(20.0, seed=2), s(1.0), phrase("hey jarvis"), s(1.0),
        synth.pink_noise(6.0, -55.0, seed=4),
    ])
    assert len(audio) >= 60 * 16000
    return audio


@pytest.fixture(scope="module")
def upstream_scores(store: ModelStore, mixed: np.ndarray) -> np.ndarray:
    np.random.seed(0)  # upstream draws its warm-up noise from the global RNG; ours uses seed 0
    up = UpstreamEngine(store.path("melspectrogram"), store.path("embedding"),
                        [(n, store.path(n)) for n in WAKE])
    np.random.seed(0)
    up.reset()
    return score_matrix(up, mixed)


def test_scores_match_openwakeword_on_every_frame(store, mixed, upstream_scores):
    ours = score_matrix(make_engine(store), mixed)
    assert ours.shape == upstream_scores.shape
    assert np.abs(ours - upstream_scores).max() < 1e-3
    assert ((ours >= 0.5) == (upstream_scores >= 0.5)).all()
    # the audio really exercises the models: three wake words cross 0.5
    assert set(np.nonzero((upstream_scores >= 0.5).any(axis=0))[0]) >= {0, 1, 3}


def test_idle_gate_skips_quiet_frames_and_keeps_every_frame_that_matters(
        store, mixed, upstream_scores):
    engine = make_engine(store, gate=-45.0)
    ours = score_matrix(engine, mixed)
    computed = np.array([True] * len(ours))
    # frames the gate skipped report 0.0 for every model; all others must match upstream
    skipped = (ours == 0.0).all(axis=1) & (upstream_scores != 0.0).any(axis=1)
    computed[skipped] = False
    assert engine.frames_skipped > 100  # the quiet stretches really were skipped
    assert np.abs(ours[computed] - upstream_scores[computed]).max() < 1e-3
    assert upstream_scores[~computed].max() < 0.1  # nothing skipped came near a threshold
    policy = [ModelPolicy(n) for n in WAKE]
    assert same_detections(detections_over(ours, policy),
                           detections_over(upstream_scores, policy))


@pytest.mark.parametrize("name,text", [("hey_jarvis", "hey jarvis"), ("alexa", "alexa"),
                                       ("hey_rhasspy", "hey rhasspy")])
def test_detects_espeak_wake_phrases(store, name, text):
    engine = make_engine(store, [name])
    audio = synth.concat([synth.silence(1.0), phrase(text), synth.silence(1.5)])
    scores = score_matrix(engine, audio)
    dets = detections_over(scores, [ModelPolicy(name)])
    assert len(dets) == 1
    # the detection lands within half a second of the end of the phrase
    end_of_phrase = 1.0 + len(phrase(text)) / 16000
    assert abs(dets[0].t - end_of_phrase) < 0.5


def test_fifteen_minutes_of_prose_give_no_detection(store):
    engine = make_engine(store, gate=-45.0)
    audio = prose(900.0, seed=7)
    assert len(audio) >= 900 * 16000
    scores = score_matrix(engine, audio)
    assert detections_over(scores, [ModelPolicy(n, 0.5) for n in WAKE]) == []
    assert scores.max() < 0.5


def test_wrong_audio_format_is_refused_with_what_is_needed(store):
    engine = make_engine(store, ["hey_jarvis"])
    with pytest.raises(AudioFormatError, match="16 kHz mono 16-bit PCM in frames of 1280"):
        engine.process(np.zeros(FRAME_SAMPLES, dtype=np.float32))
    with pytest.raises(AudioFormatError, match=r"shape \(640,\)"):
        engine.process(np.zeros(640, dtype=np.int16))


def test_model_with_wrong_shape_is_refused_at_load(store):
    with pytest.raises(ModelError, match=r"embedding_model.onnx.*expected \[1, N, 96\]"):
        Classifier.load("embedding_model.onnx", store.path("embedding"))
    with pytest.raises(ModelError, match=r"hey_jarvis_v0.1.onnx.*expected \[N, 76, 32, 1\]"):
        FeatureModels.load(store.path("melspectrogram"), store.path("hey_jarvis"))


def test_corrupt_model_file_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"broken.onnx.*edge models fetch"):
        Classifier.load("broken", bad)


def test_reset_starts_a_fresh_stream(store, mixed):
    engine = make_engine(store, ["hey_jarvis"])
    first = score_matrix(engine, mixed[: 10 * 16000])
    engine.reset()
    again = score_matrix(engine, mixed[: 10 * 16000])
    assert np.array_equal(first, again)
