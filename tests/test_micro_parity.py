"""microWakeWord in numpy against pymicro-wakeword (TensorFlow Lite): on the same audio, the
same per-step probabilities (within one quantization step) and the same detections."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.wake.engine import frame_dbfs
from edge.wake.micro.engine import MicroEngine, MicroModel, check_input
from edge.wake.micro.frontend import Frontend
from edge.wake.models import MicroSpec, ModelStore
from tests.fixtures.audio import phrase, prose

GATE_DBFS = -45.0


def micro_specs(store: ModelStore) -> list[MicroSpec]:
    names = [m.name for m in store.manifest.models if m.kind == "micro"]
    assert len(names) >= 4, names
    return [store.micro(*store.resolve(n)) for n in names]


@functools.cache
def mixed_minute() -> np.ndarray:
    """One minute of speech, silence, noise and each bundled model's wake phrase."""
    audio = synth.concat([
        synth.silence(1.5), phrase("okay nabu"), synth.silence(1.0),
        synth.pink_noise(3.0, -40.0, seed=1), phrase("alexa"), prose(12.0, seed=3),
        synth.silence(2.0), phrase("hey jarvis"), synth.pink_noise(4.0, -30.0, seed=2),
        phrase("hey mycroft"), synth.silence(6.0), prose(10.0, seed=4),
        phrase("okay nabu"), synth.pink_noise(3.0, -55.0, seed=5),
    ])
    out = np.zeros(60 * 16000, dtype=np.int16)
    n = min(len(audio), len(out))
    out[:n] = audio[:n]
    return out


def frames(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[i:i + FRAME_SAMPLES] for i in range(0, len(audio) - FRAME_SAMPLES + 1,
                                                       FRAME_SAMPLES)]


def reference(spec: MicroSpec, audio: np.ndarray) -> tuple[np.ndarray, set[int]]:
    """pymicro-wakeword's probability of every step, and the frames it detected in."""
    ref = MicroWakeWord.from_config(spec.json)
    feats = MicroWakeWordFeatures()
    probs, detected = [], set()
    for index, frame in enumerate(frames(audio)):
        for f in feats.process_streaming(frame.tobytes()):
            before = len(ref._features)
            if ref.process_streaming(f):
                detected.add(index)
            if before + 1 == ref.stride:  # this call ran a step
                probs.append(ref._probabilities[-1])
    return np.array(probs), detected


def ours_per_step(spec: MicroSpec, audio: np.ndarray) -> np.ndarray:
    model, front = MicroModel(spec), Frontend()
    rows = np.concatenate([front.rows(f) for f in frames(audio)])
    out = []
    for i in range(0, len(rows) - model.stride + 1, model.stride):
        model.step(rows[i:i + model.stride])
        out.append(model.last)
    return np.array(out)


def detections(engine: MicroEngine, audio: np.ndarray, cutoff: float
               ) -> tuple[np.ndarray, set[int]]:
    engine.reset()
    scores = np.array([engine.process(f)[0] for f in frames(audio)])
    return scores, {int(i) for i in np.nonzero(scores >= cutoff)[0]}


def test_every_bundled_model_gives_tflites_probabilities_and_detections(store):
    audio = mixed_minute()
    fired = 0
    for spec in micro_specs(store):
        ref_probs, ref_frames = reference(spec, audio)
        probs = ours_per_step(spec, audio)
        assert len(probs) == len(ref_probs) > 1900, spec.name
        step = 1 / 256  # the output's quantization step (uint8, scale 1/256)
        worst = np.abs(probs - ref_probs).max()
        assert worst <= step, f"{spec.name}: off by {worst / step:.0f} steps"
        _, ours = detections(MicroEngine([spec]), audio, spec.probability_cutoff)
        assert ours == ref_frames, spec.name
        fired += bool(ref_frames)
    assert fired >= 2, "the mixed minute should wake some models, or the parity says little"


def test_the_manifest_check_outputs_are_tflites(store):
    for spec in micro_specs(store):
        ref = MicroWakeWord.from_config(spec.json)
        out = []
        for x in check_input(ref.stride):
            features = (x.astype(np.float64) - ref.input_zero_point) * ref.input_scale
            for r in range(ref.stride):
                ref.process_streaming_prob(features[:, r:r + 1, :])
            out.append(round(ref._probabilities[-1] / ref.output_scale + ref.output_zero_point))
        assert tuple(out) == spec.check, spec.name


@pytest.mark.parametrize("name", ["micro:okay_nabu", "micro:hey_mycroft"])
def test_the_idle_gate_changes_no_score_of_a_frame_it_computes(store, name):
    spec = store.micro(*store.resolve(name))
    audio = synth.concat([synth.silence(5.0), mixed_minute()[:25 * 16000], synth.silence(8.0),
                          phrase("okay nabu"), synth.pink_noise(4.0, -70.0), phrase("hey mycroft"),
                          synth.silence(1.0)])
    full, full_frames = detections(MicroEngine([spec]), audio, spec.probability_cutoff)
    gated_engine = MicroEngine([spec], idle_gate_dbfs=GATE_DBFS)
    gated, gated_frames = detections(gated_engine, audio, spec.probability_cutoff)
    assert gated_engine.frames_skipped > 100
    assert gated_frames == full_frames
    loud = np.array([frame_dbfs(f) >= GATE_DBFS for f in frames(audio)])
    assert np.array_equal(gated[loud], full[loud])
    assert np.all((gated == full) | (gated == 0.0))
