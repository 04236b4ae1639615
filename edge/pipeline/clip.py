"""A finished clip: the pre-roll plus the utterance that followed a detection."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edge.audio.frames import SAMPLE_RATE


@dataclass(frozen=True)
class Clip:
    """One kept utterance: the pre-roll and the speech after a detection, with what started it."""

    id: str
    """Random UUID4: the receiver de-duplicates on it."""
    activation_id: str
    model: str
    score: float
    """The activation's peak score: the highest over the whole run of frames over the
    threshold that triggered it (``ActivationEnded.peak``)."""
    threshold: float
    start: float
    """Stream time (s) of the first sample."""
    end: float
    """Stream time (s) after the last sample."""
    detection_t: float
    reason: str
    """silence, no_speech or max_length."""
    vad_speech_ratio: float
    wall_time: float
    """Wall-clock time of the detection (UTC epoch seconds)."""
    audio: np.ndarray = field(repr=False, compare=False)
    """int16 mono samples at 16 kHz."""
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def metadata(self) -> dict[str, Any]:
        """Everything about the clip except its audio. Carries no device identifiers."""
        return {
            "id": self.id,
            "activation_id": self.activation_id,
            "model": self.model,
            "score": round(self.score, 6),
            "threshold": self.threshold,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "detection_t": round(self.detection_t, 3),
            "reason": self.reason,
            "no_speech": self.reason == "no_speech",
            "vad_speech_ratio": round(self.vad_speech_ratio, 4),
            "time": datetime.fromtimestamp(self.wall_time, UTC).isoformat(),
            "duration_s": round(self.duration_s, 3),
            "sample_rate": self.sample_rate,
        }
