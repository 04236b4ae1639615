"""Voice activity detection with the Silero VAD model that openWakeWord's bundle ships.

Silero is already in the verified model bundle (no extra dependency), runs with
numpy like the other stock models (on onnxruntime with ``runtime="onnxruntime"``,
see edge.wake.engine), and only runs while a clip is being recorded, so its cost
is paid per activation, not per hour. See README, "Choosing the VAD".

>>> vad = SileroVad.load(path)
>>> vad.speech_probability(frame)  # doctest: +SKIP
0.93
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.audio.frames import SAMPLE_RATE
from edge.wake.runtime import Model, load_model

CHUNK = 640
"""Samples per Silero call: two per 80 ms frame, as openWakeWord's own VAD wrapper does."""


class Vad(Protocol):
    def speech_probability(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


class DeferredVad:
    """A VAD loaded when :meth:`load` is called, or else when it is first asked.

    The daemon scores its first frame before the VAD is loaded (about 7 ms of its start-up)
    and loads it at once after, on the audio thread: a recording, the only user of the VAD,
    cannot start before the engine's warm-up frames have passed. The file was verified
    (manifest sha256) before; what is deferred is reading the graph and its check.
    """

    def __init__(self, loader: Callable[[], Vad]) -> None:
        self._loader = loader
        self._vad: Vad | None = None

    @property
    def loaded(self) -> bool:
        return self._vad is not None

    def load(self) -> Vad:
        if self._vad is None:
            self._vad = self._loader()
        return self._vad

    def speech_probability(self, frame: np.ndarray) -> float:
        return self.load().speech_probability(frame)

    def reset(self) -> None:
        if self._vad is not None:  # one loaded later starts reset
            self._vad.reset()


class SileroVad:
    """Silero VAD (the LSTM version with h/c state) over 80 ms int16 frames."""

    def __init__(self, session: Model) -> None:
        self._s = session
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    @classmethod
    def load(cls, path: Path, runtime: str = "auto") -> SileroVad:
        return cls(load_model(path, "vad", 1, runtime))

    def reset(self) -> None:
        self._h = np.zeros((2, 1, 64), dtype=np.float32)
        self._c = np.zeros((2, 1, 64), dtype=np.float32)

    def speech_probability(self, frame: np.ndarray) -> float:
        x = frame.astype(np.float32) / 32767.0
        best = 0.0
        for i in range(0, len(x), CHUNK):
            out, self._h, self._c = self._s.run(
                None, {"input": x[None, i:i + CHUNK], "h": self._h, "c": self._c, "sr": self._sr}
            )
            best = max(best, float(out.reshape(-1)[0]))
        return best
