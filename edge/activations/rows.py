"""What the activation log holds: an activation's row, a listening period, labels and
outcomes, and the ``--since`` times its readers take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge.activations.schema import LABEL_SOURCES
from edge.errors import UsageError


@dataclass(frozen=True)
class ActivationRow:
    """One activation, as written when it ended."""

    id: str
    wall_time: float
    """Wall-clock time of the detection (UTC epoch seconds)."""
    model: str
    threshold: float
    peak_score: float
    """Highest score over the run of frames at or over the threshold that triggered."""
    frames_over: int
    """Length of that run, in 80 ms frames."""
    clip_id: str | None
    duration_s: float
    """Recording length: the pre-roll plus what followed, or what was heard before an abort."""
    vad_speech_ratio: float
    end_reason: str
    """How the recording ended: silence, no_speech, max_length, shutdown, end_of_stream, ..."""
    outcome: str
    likely_false: bool
    flags: tuple[str, ...] = ()
    """Why it is flagged likely-false: no_speech, cancelled_by_user, aborted_by_mute, verifier."""
    verifier: str | None = None
    verifier_accept: bool | None = None
    verifier_score: float | None = None
    audio_file: str | None = None
    period: int | None = None
    period_heard_s: float = 0.0
    """Listening time of its period at the detection: the row checkpoints the period."""
    label: str = "unknown"
    label_source: str = "auto"
    labelled_at: float | None = None


def outcome_for(reason: str, clip_id: str | None, sinks_keep: bool = True) -> str:
    """The outcome recorded when an activation ends (``uploaded`` comes later).

    ``sinks_keep``: whether the clip sinks keep a clip (false when the only sink
    discards it: upload off and no local copy).
    """
    if reason in ("aborted_by_mute", "cancelled_by_user"):
        return reason
    if clip_id is not None:
        return "kept" if sinks_keep else "discarded"
    return "no_speech" if reason == "no_speech" else "discarded"


@dataclass(frozen=True)
class Period:
    """A stretch of time spent running and unmuted."""

    n: int
    start_wall: float
    end_wall: float | None
    heard_s: float
    """Seconds of audio actually heard (80 ms frames fed while unmuted)."""
    checkpoint_wall: float
    end_reason: str | None
    models: dict[str, float] = field(default_factory=dict)
    """The models listened for, each with its threshold."""
    boot_id: str = ""
    pid: int = 0


def boot_id() -> str:
    """This boot's id, so a dead daemon's open period is told from a running one's."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_label(label: str, source: str) -> None:
    if label not in ("true", "false"):
        raise UsageError(f"label {label!r} is not allowed; give true (it was meant for the "
                         "device) or false (an accidental wake)")
    if source not in LABEL_SOURCES:
        raise UsageError(f"label source {source!r} is not allowed; use one of "
                         f"{', '.join(LABEL_SOURCES)}")


def at_or_now(at: float | None) -> float:
    """``at``, or the wall-clock time now when it is None."""
    return datetime.now(UTC).timestamp() if at is None else at


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: an ISO 8601 date or time (UTC unless it says otherwise), or an age
    such as ``7d``, ``12h`` or ``30m``; epoch seconds."""
    s = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60}
    if len(s) >= 2 and s[-1] in units and s[:-1].replace(".", "", 1).isdigit():
        return at_or_now(now) - float(s[:-1]) * units[s[-1]]
    try:
        when = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date; give YYYY-MM-DD, a time such as "
                         "2024-05-01T13:00Z (UTC unless an offset is given), or an age such "
                         "as 7d, 12h or 30m") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
