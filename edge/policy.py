"""Detection policy: turns per-frame scores into detections.

One policy serves the live device, ``edge replay`` and ``edge measure``, so the
three can never disagree about what counts as a detection.

>>> p = DetectionPolicy([ModelPolicy("hey_jarvis", threshold=0.5)])
>>> p.step(np.array([0.9]), frame_index=30)
[Detection(model='hey_jarvis', score=0.9, frame_index=30, frames_over=1, threshold=0.5)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.engine import FRAME_SAMPLES, SAMPLE_RATE

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


@dataclass(frozen=True)
class ModelPolicy:
    """How one wake word's scores become detections."""

    model: str
    threshold: float = 0.5
    """Score at or above which a frame counts (0 to 1)."""
    patience: int = 1
    """Consecutive frames at or above the threshold before a trigger."""
    refractory_s: float = 2.0
    """Seconds after a detection during which the same model cannot trigger again."""


@dataclass(frozen=True)
class Detection:
    model: str
    score: float
    """Peak score over the consecutive frames that triggered."""
    frame_index: int
    """Index of the triggering frame in its stream."""
    frames_over: int
    threshold: float

    @property
    def t(self) -> float:
        """Stream time in seconds at the end of the triggering frame."""
        return round((self.frame_index + 1) * FRAME_S, 6)


class DetectionPolicy:
    """Threshold, patience and refractory period per model. Stateful per stream."""

    def __init__(self, models: Sequence[ModelPolicy]) -> None:
        self.models = list(models)
        self._refractory_frames = [round(m.refractory_s / FRAME_S) for m in self.models]
        self.reset()

    def reset(self) -> None:
        n = len(self.models)
        self._run = [0] * n
        self._peak = [0.0] * n
        self._blocked_until = [-1] * n

    def set_threshold(self, model: str, threshold: float) -> None:
        for i, m in enumerate(self.models):
            if m.model == model:
                self.models[i] = ModelPolicy(m.model, threshold, m.patience, m.refractory_s)
                return
        raise KeyError(model)

    def step(self, scores: np.ndarray, frame_index: int) -> list[Detection]:
        found: list[Detection] = []
        for i, m in enumerate(self.models):
            s = float(scores[i])
            if s >= m.threshold:
                self._run[i] += 1
                self._peak[i] = max(self._peak[i], s) if self._run[i] > 1 else s
            else:
                self._run[i] = 0
                continue
            if self._run[i] >= m.patience and frame_index > self._blocked_until[i]:
                found.append(Detection(m.model, round(self._peak[i], 6), frame_index,
                                       self._run[i], m.threshold))
                self._blocked_until[i] = frame_index + self._refractory_frames[i]
        return found


def detections_over(scores: np.ndarray, models: Sequence[ModelPolicy]) -> list[Detection]:
    """Run the policy over a whole (frames, models) score matrix, as the stream would."""
    policy = DetectionPolicy(models)
    out: list[Detection] = []
    for idx in range(scores.shape[0]):
        out.extend(policy.step(scores[idx], idx))
    return out
