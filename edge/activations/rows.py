"""What the activation log holds: an activation's row, a listening period, labels and
outcomes, and the ``--since`` times its readers take.
"""

from __future__ import annotations

import os
import re
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
    streamed_to: str | None = None
    """Where its utterance was streamed (a voice assistant, e.g. 'esphome://192.0.2.7:50312');
    None when it was not."""


def outcome_for(reason: str, clip_id: str | None, sinks_keep: bool = True,
                streamed: bool = False) -> str:
    """The outcome recorded when an activation ends (``uploaded`` comes later).

    ``sinks_keep``: whether the clip sinks keep a clip (false when the only sink
    discards it: upload off and no local copy). ``streamed``: its audio was handed to a
    voice assistant, which is what the owner most needs to see, however the turn ended.
    """
    if streamed:
        return "streamed"
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


ACTIVATION_NUMBER = re.compile(r"[0-9]{1,18}")
"""An activation's number as typed: ASCII digits that fit SQLite's INTEGER."""
LAST_TIME = 253402300799.0
"""9999-12-31T23:59:59Z, the last time ``datetime`` shows."""
AGE = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)([dhm])")
"""An age such as ``7d``, ``12h`` or ``1.5m``: ASCII digits only (``int`` and ``float``
take other scripts' digits, ``isdigit`` takes superscripts too)."""


def parse_since(text: str, now: float | None = None, key: str = "--since") -> float:
    """``--since``: an ISO 8601 date or time (UTC unless it says otherwise), or an age
    such as ``7d``, ``12h`` or ``30m``; epoch seconds, from 1970 on. ``key`` names the
    setting in the one-line ``UsageError`` (``since`` over MQTT).

    >>> parse_since("2d", now=86400.0 * 3)
    86400.0
    """
    s = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60}
    hint = ("give YYYY-MM-DD, a time such as 2024-05-01T13:00Z (UTC unless an offset is "
            "given), or an age such as 7d, 12h or 30m")
    age = AGE.fullmatch(s)
    if age:
        at = at_or_now(now) - float(age[1]) * units[age[2]]
    else:
        try:
            if not s.isascii():
                raise ValueError(s)
            when = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            at = when.timestamp()
        except (ValueError, OverflowError):
            raise UsageError(f"{key} {text[:60]!r} is not a date; {hint}") from None
    if not 0 <= at <= LAST_TIME:
        raise UsageError(f"{key} {text[:60]!r} is outside 1970 to 9999, the times the log can "
                         f"hold; {hint}")
    return at
