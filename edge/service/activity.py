"""The daemon's account of what it does, in the log: a bus subscriber, built by the
composition root.

One INFO line per detection (model, score, threshold), per activation's end (its clip
kept, or its audio discarded and why, with the activation's peak score), per upload, per
utterance streamed to a voice assistant and per mute change; the quieter events at DEBUG.
Metadata only: an event's audio is never read here, and there is no transcript to log. Each
line carries journal fields (``EDGE_EVENT=detection|clip|upload|assist|mute|threshold``) for
``journalctl EDGE_EVENT=clip``.

>>> bus.subscribe("activity-log", ActivityLog(kept="kept in /var/lib/clips").on_event)
...                                                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging

from edge.pipeline.events import (
    ActivationEnded,
    ClipUploaded,
    DetectionEvent,
    MuteChanged,
    RunEnded,
    StateChanged,
    ThresholdChanged,
    TranscriptReady,
    TurnStreamed,
)
from edge.service.logs import fields

log = logging.getLogger(__name__)


def short(uuid: str) -> str:
    """The first 8 characters of an id: what ``edge log`` shows, and enough to find it."""
    return uuid[:8]


class ActivityLog:
    """Turns recorder and upload events into log lines."""

    def __init__(self, kept: str | None) -> None:
        self.kept = kept
        """Where a clip handed to the sinks goes, in words ('kept in DIR', 'queued for
        upload'); None when it is not kept (upload off and ``output.keep_local`` false)."""

    def on_event(self, ev: object) -> None:
        if isinstance(ev, DetectionEvent):
            self._detection(ev)
        elif isinstance(ev, ActivationEnded):
            self._ended(ev)
        elif isinstance(ev, ClipUploaded):
            log.info("clip %s uploaded to %s", short(ev.clip_id), ev.destination,
                     extra=fields(event="upload", clip_id=ev.clip_id))
        elif isinstance(ev, TurnStreamed):
            log.info("activation %s: %.2f s of audio (%d bytes) streamed to %s, ended by %s",
                     short(ev.activation_id), ev.seconds, ev.bytes, ev.destination, ev.ended_by,
                     extra=fields(event="assist", activation_id=ev.activation_id,
                                  destination=ev.destination, bytes=ev.bytes,
                                  ended_by=ev.ended_by, model=ev.wake_word))
        elif isinstance(ev, TranscriptReady):  # what the owner asked the server to hear
            log.info("activation %s: %s heard %r (%.2f s of audio)", short(ev.activation_id),
                     ev.destination, ev.text, ev.seconds,
                     extra=fields(event="transcript", activation_id=ev.activation_id,
                                  destination=ev.destination, chars=len(ev.text),
                                  model=ev.wake_word))
        elif isinstance(ev, MuteChanged):
            self._mute(ev)
        elif isinstance(ev, ThresholdChanged):
            shown = ", ".join(f"{m} {t:.2f}" for m, t in sorted(ev.thresholds.items()))
            log.info("thresholds now: %s", shown, extra=fields(event="threshold"))
        elif isinstance(ev, RunEnded):
            r = ev.run
            log.debug("%s over its threshold for %d frame(s), peak %.3f", r.model, r.frames,
                      r.peak)
        elif isinstance(ev, StateChanged):
            log.debug("state %s -> %s (%s)", ev.old, ev.new, ev.reason or "-")

    def _detection(self, ev: DetectionEvent) -> None:
        d = ev.detection
        extra = fields(event="detection", activation_id=ev.activation_id, model=d.model,
                       score=d.score, threshold=d.threshold, ignored=ev.ignored)
        if ev.ignored:
            log.info("heard %s during recording %s (score %.3f, threshold %.2f): ignored",
                     d.model, short(ev.activation_id), d.score, d.threshold, extra=extra)
        else:
            log.info("heard %s (score %.3f, threshold %.2f): recording activation %s",
                     d.model, d.score, d.threshold, short(ev.activation_id), extra=extra)

    def _ended(self, ev: ActivationEnded) -> None:
        kept = ev.clip_id is not None and self.kept is not None
        what = (f"clip {short(ev.clip_id or '')} {self.kept}" if kept else
                f"clip {short(ev.clip_id or '')} not kept (upload is off and "
                "output.keep_local is false)" if ev.clip_id else "its audio discarded")
        log.info("activation %s ended (%s, %.1f s, peak %.3f): %s", short(ev.activation_id),
                 ev.reason, ev.duration_s, ev.peak, what,
                 extra=fields(event="clip", activation_id=ev.activation_id,
                              clip_id=ev.clip_id or "", reason=ev.reason, kept=kept,
                              peak=ev.peak, model=ev.detection.model))

    def _mute(self, ev: MuteChanged) -> None:
        extra = fields(event="mute", muted=ev.muted, causes=",".join(ev.causes))
        if ev.muted:
            log.info("muted (%s)%s", "+".join(ev.causes) or "-",
                     f": {ev.reason}" if ev.reason else "", extra=extra)
        else:
            log.info("unmuted%s: listening", f" ({ev.reason})" if ev.reason else "",
                     extra=extra)
