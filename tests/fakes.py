"""Fakes for the recorder's collaborators: scripted engines and VADs, sources, a chime, and
an event collector."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource


class ScriptedEngine:
    """Scores 0.9 on the frames listed in ``fire_at`` (counted from the stream start)."""

    def __init__(self, fire_at: set[int] | None = None, name: str = "m") -> None:
        self.fire_at = set(fire_at or ())
        self.name = name
        self.frames_seen = 0
        self.zeroed = 0

    @property
    def model_names(self) -> tuple[str, ...]:
        return (self.name,)

    def process(self, frame: np.ndarray) -> np.ndarray:
        i = self.frames_seen
        self.frames_seen += 1
        return np.array([0.9 if i in self.fire_at else 0.0], dtype=np.float32)

    def reset(self) -> None:
        self.frames_seen = 0

    def zero(self) -> None:
        self.zeroed += 1


class LevelVad:
    """Speech wherever the frame is louder than ``level`` (synthetic audio makes this exact)."""

    def __init__(self, level: int = 100) -> None:
        self.level = level
        self.calls = 0
        self.resets = 0

    def speech_probability(self, frame: np.ndarray) -> float:
        self.calls += 1
        return 1.0 if int(np.abs(frame).max()) > self.level else 0.0

    def reset(self) -> None:
        self.resets += 1


class Collector:
    """Collects events synchronously-enough for tests: use ``wait_for`` after the bus flushes."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


class FakeChime:
    """A chime output that records what it was asked to play."""

    def __init__(self) -> None:
        self.played: list[str] = []

    def play(self, kind: str) -> None:
        self.played.append(kind)

    def close(self) -> None:
        pass


class HeldSource(ArraySource):
    """Plays ``samples``, then quiet frames (paced like a microphone) until ``release``."""

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__(samples, name="held")
        self.release = threading.Event()

    def read(self) -> np.ndarray | None:
        frame = super().read()
        if frame is not None:
            return frame
        if self.release.is_set():
            return None
        time.sleep(0.08)
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)
