"""Second opinions on a detection: a hook that may confirm or reject a wake after the fact.

A verifier runs on the activation log's thread when an activation ends, never on
the audio loop, so it may take its time. A rejection flags the activation as
likely false (``flags`` gains ``verifier``); it never deletes audio or stops a
clip: it is a second opinion for the statistics, not a gate.

>>> v = ScoreMarginVerifier(margin=0.1, min_frames=2)
>>> v.verify(Candidate("a1", "hey_jarvis", 0.5, peak_score=0.52, frames_over=1)).accept
False

Shipped here is one cheap verifier, ``ScoreMarginVerifier``. It is a heuristic
over what the detector already saw: it re-reads the *whole* run of frames over
the threshold (the detector decides on the first ``patience`` frames of it) and
rejects wakes that were both barely over the threshold and brief. It is not a
second model. An audio verifier (openWakeWord's per-speaker custom verifier, a
speech recogniser) plugs in through the same ``Verifier`` protocol with
``needs_audio = True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge.config import ActivationsConfig


@dataclass(frozen=True)
class Candidate:
    """What a verifier is shown about one activation."""

    activation_id: str
    model: str
    threshold: float
    peak_score: float
    """Highest score over the run of frames at or over the threshold that triggered."""
    frames_over: int
    """Length of that run, in 80 ms frames."""
    audio: np.ndarray | None = None
    """The recording (16 kHz int16: pre-roll then what followed), when one exists."""
    detection_offset_s: float | None = None
    """Where in ``audio`` the triggering frame ends, in seconds."""


@dataclass(frozen=True)
class Verdict:
    """A second opinion on a detection: confirmed, rejected as likely false, or none."""

    accept: bool | None
    """True: confirmed; False: rejected (likely false); None: no opinion."""
    score: float | None = None
    reason: str = ""


class Verifier(Protocol):
    name: str
    needs_audio: bool
    """Whether ``verify`` wants ``Candidate.audio`` (only kept clips, or kept false audio)."""

    def verify(self, candidate: Candidate) -> Verdict: ...


class ScoreMarginVerifier:
    """Rejects a wake whose peak was within ``margin`` of the threshold and whose run of
    frames over the threshold was shorter than ``min_frames``.

    A spoken wake word usually holds the score high for several 80 ms frames; a
    single frame that barely crosses the line is the classic accidental wake.
    """

    name = "score_margin"
    needs_audio = False

    def __init__(self, margin: float = 0.1, min_frames: int = 2) -> None:
        self.margin = margin
        self.min_frames = min_frames

    def verify(self, candidate: Candidate) -> Verdict:
        over = candidate.peak_score - candidate.threshold
        strong = over >= self.margin
        sustained = candidate.frames_over >= self.min_frames
        if strong or sustained:
            why = "peak well over the threshold" if strong else "sustained over the threshold"
            return Verdict(True, round(over, 6), why)
        return Verdict(False, round(over, 6),
                       f"peak only {over:.3f} over the threshold for "
                       f"{candidate.frames_over} frame(s)")


def build_verifier(cfg: ActivationsConfig) -> Verifier | None:
    """The verifier named by ``[activations] verifier``, or None."""
    if cfg.verifier == "score_margin":
        return ScoreMarginVerifier(cfg.verifier_margin, cfg.verifier_min_frames)
    return None
