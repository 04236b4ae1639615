"""Where the threshold floor (edge.config.rules.THRESHOLD_FLOOR) comes from: the scores the
four manifest models give ordinary speech with no wake word, and the peaks they give their
own wake phrase.

    .venv/bin/python -m bench.threshold_floor [MINUTES]

Prints, per model, the 99th, 99.9th percentile and the maximum frame score over MINUTES
(default 20) of espeak prose (``edge.audio.synth.prose``, plus every prose sentence once
in four other voices), the lowest and median peak of its wake phrase said in five voices
at four speeds, and the detections per hour that speech gives at thresholds from 0 up.
The floor must lie well above the speech scores and below the wake peaks.
"""

from __future__ import annotations

import sys

import numpy as np

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.config import WakeConfig
from edge.config.rules import THRESHOLD_FLOOR
from edge.measure.sweep import activations, policy_at
from edge.wake.detector import build_engine

MODELS = ("alexa", "hey_jarvis", "hey_mycroft", "hey_rhasspy")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3")


def scores(engine: object, samples: np.ndarray) -> np.ndarray:
    """Frame scores, one row per 80 ms frame, one column per model (a fresh stream)."""
    engine.reset()  # type: ignore[attr-defined]
    n = len(samples) // FRAME_SAMPLES
    frames = samples[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
    return np.array([engine.process(f) for f in frames])  # type: ignore[attr-defined]


def main(minutes: float = 20.0) -> None:
    wake = WakeConfig(models=MODELS, idle_gate=False)
    engine = build_engine(wake)
    names = engine.model_names
    prose = [synth.prose(minutes * 60.0, seed=0)]
    prose += [synth.concat([synth.speak(s, voice=v), synth.silence(0.4)])
              for v in VOICES[1:] for s in synth.PROSE]
    neg = np.concatenate([scores(engine, p) for p in prose])
    hours = len(neg) * FRAME_SAMPLES / 16000 / 3600
    print(f"speech without a wake word: {len(neg)} frames ({hours * 60:.1f} min)")
    peaks: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        for v in VOICES:
            for speed in synth.SPEEDS:
                clip = synth.concat([synth.silence(1.0),
                                     synth.speak(synth.WAKE_PHRASES[n], voice=v, speed=speed),
                                     synth.silence(1.0)])
                peaks[n].append(float(scores(engine, clip)[:, names.index(n)].max()))
    print(f"{'model':<12} {'p99':>8} {'p99.9':>8} {'max':>8}   {'wake min':>8} "
          f"{'wake median':>11}  (floor {THRESHOLD_FLOOR:g})")
    for i, n in enumerate(names):
        col = neg[:, i]
        p = peaks[n]
        print(f"{n:<12} {np.percentile(col, 99):8.4f} {np.percentile(col, 99.9):8.4f} "
              f"{col.max():8.4f}   {min(p):8.4f} {float(np.median(p)):11.4f}  "
              f"({sum(x >= THRESHOLD_FLOOR for x in p)}/{len(p)} wakes reach it)")
    print("detections per hour of that speech (the device's policy: patience 1, "
          "refractory 2 s), by threshold:")
    for t in (0.0, 0.01, 0.05, THRESHOLD_FLOOR, 0.2, 0.5):
        rates = [len(activations(neg[:, i], policy_at(wake, names, n, t))) / hours
                 for i, n in enumerate(names)]
        print(f"  {t:<5g} " + "  ".join(f"{n} {r:7.1f}" for n, r in zip(names, rates,
                                                                       strict=True)))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
