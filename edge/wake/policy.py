"""Detection policy: turns per-frame scores into detections.

One policy serves the live device, ``edge replay`` and ``edge measure``, so the
three can never disagree about what counts as a detection.

>>> p = DetectionPolicy([ModelPolicy("hey_jarvis", threshold=0.5)])
>>> p.step(np.array([0.9]), frame_index=30)
[Detection(model='hey_jarvis', score=0.9, frame_index=30, frames_over=1, threshold=0.5)]

The policy also reports the end of every run of frames at or over a threshold, whether
it triggered or not (the activation log records a wake's whole run):

>>> ended = []
>>> p = DetectionPolicy([ModelPolicy("alexa", threshold=0.5)], on_run_end=ended.append)
>>> for i, s in enumerate([0.2, 0.6, 0.8, 0.7, 0.1]):
...     _ = p.step(np.array([s]), i)
>>> ended
[ScoreRun(model='alexa', first=1, last=3, peak=0.8)]

A detection's score is the highest frame up to the one that triggered; the run may climb
higher after it. The peak of an activation is the peak of its whole run, and every report
of one (activation log, sidecar, MQTT, dashboard, replay) takes it from ``run_of``:

>>> p = DetectionPolicy([ModelPolicy("alexa", threshold=0.5)])
>>> d = [d for i, s in enumerate([0.6, 0.9, 0.7, 0.1]) for d in p.step(np.array([s]), i)][0]
>>> d.score, p.run_of(d).peak
(0.6, 0.9)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.audio.frames import FRAME_S


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
    """A wake word the policy accepted: which model, how high and at which frame."""

    model: str
    score: float
    """Peak score over the consecutive frames up to the trigger (the run may go higher
    after it: ``DetectionPolicy.run_of`` gives the whole run's peak)."""
    frame_index: int
    """Index of the triggering frame in its stream."""
    frames_over: int
    threshold: float

    @property
    def t(self) -> float:
        """Stream time in seconds at the end of the triggering frame."""
        return round((self.frame_index + 1) * FRAME_S, 6)

    @property
    def run_first(self) -> int:
        """Index of the first frame of the run that triggered."""
        return self.frame_index - self.frames_over + 1


@dataclass(frozen=True)
class ScoreRun:
    """A run of consecutive frames at or over one model's threshold."""

    model: str
    first: int
    """Index of the run's first frame."""
    last: int
    """Index of the run's last frame."""
    peak: float
    """Highest score over the whole run."""

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


RUNS_KEPT = 16
"""Ended runs remembered for ``run_of`` (an activation ends seconds after its run)."""


class DetectionPolicy:
    """Threshold, patience and refractory period per model. Stateful per stream.

    ``on_run_end`` is told of every run at or over a threshold when it ends (a frame
    under the threshold, a threshold change, or ``reset``), on the caller's thread.
    """

    def __init__(self, models: Sequence[ModelPolicy],
                 on_run_end: Callable[[ScoreRun], None] | None = None) -> None:
        self.models = list(models)
        self.on_run_end = on_run_end
        self._refractory_frames = [round(m.refractory_s / FRAME_S) for m in self.models]
        n = len(self.models)
        self._run = [0] * n
        self._peak = [0.0] * n
        self._first = [-1] * n
        self._ended: deque[ScoreRun] = deque(maxlen=RUNS_KEPT)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a mute, a new stream); a run in progress ends here."""
        for i in range(len(self.models)):
            self._end_run(i)
        n = len(self.models)
        self._blocked_until = [-1] * n

    def _end_run(self, i: int) -> None:
        if self._run[i]:
            run = self._current(i)
            self._ended.append(run)
            if self.on_run_end is not None:
                self.on_run_end(run)
        self._run[i], self._peak[i], self._first[i] = 0, 0.0, -1

    def _current(self, i: int) -> ScoreRun:
        return ScoreRun(self.models[i].model, self._first[i], self._first[i] + self._run[i] - 1,
                        round(self._peak[i], 6))

    def run_of(self, d: Detection) -> ScoreRun:
        """The run of frames over the threshold that triggered ``d``, as far as it has gone
        (whole, once it ended): its ``peak`` is the activation's peak score."""
        first = d.run_first
        for i, m in enumerate(self.models):
            if m.model == d.model and self._run[i] and self._first[i] == first:
                return self._current(i)
        for r in reversed(self._ended):
            if r.model == d.model and r.first == first:
                return r
        return ScoreRun(d.model, first, d.frame_index, d.score)  # forgotten: what it knew

    def set_threshold(self, model: str, threshold: float) -> None:
        for i, m in enumerate(self.models):
            if m.model == model:
                self._end_run(i)  # a run is measured against one threshold
                self.models[i] = ModelPolicy(m.model, threshold, m.patience, m.refractory_s)
                return
        raise KeyError(model)

    @property
    def thresholds(self) -> dict[str, float]:
        return {m.model: m.threshold for m in self.models}

    def step(self, scores: np.ndarray, frame_index: int) -> list[Detection]:
        found: list[Detection] = []
        for i, m in enumerate(self.models):
            s = float(scores[i])
            if s >= m.threshold:
                self._run[i] += 1
                if self._run[i] == 1:
                    self._first[i], self._peak[i] = frame_index, s
                else:
                    self._peak[i] = max(self._peak[i], s)
            else:
                if self._run[i]:
                    self._end_run(i)
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
