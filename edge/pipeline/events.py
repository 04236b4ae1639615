"""Recorder events, and a bus that delivers them without ever blocking the audio loop.

Each subscriber gets its own bounded queue and worker thread. ``publish`` only
appends to queues: a slow subscriber loses its oldest events (counted and logged),
a failing one is logged; neither can make the audio loop drop a frame or stop.

>>> bus = EventBus()
>>> bus.subscribe("printer", print)
>>> bus.publish(StateChanged("listening", "recording", 1.2))
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from edge.pipeline.clip import Clip
from edge.wake.policy import Detection, ScoreRun

log = logging.getLogger(__name__)


class State(StrEnum):
    LISTENING = "listening"
    RECORDING = "recording"
    MUTED = "muted"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StateChanged:
    """The recorder moved from one state to another (listening, recording, muted, ...)."""

    old: str
    new: str
    t: float
    """Stream time, seconds."""
    reason: str = ""


@dataclass(frozen=True)
class DetectionEvent:
    """A wake word was detected (each detection, whether it started a recording or not)."""

    detection: Detection
    activation_id: str
    wall_time: float
    ignored: bool = False
    """True when it came during a recording (and so started nothing)."""


@dataclass(frozen=True)
class RecordingStarted:
    """A detection started a recording."""

    activation_id: str
    clip_id: str
    model: str
    t: float
    wall_time: float


@dataclass(frozen=True)
class RecordingStopped:
    """A recording ended, and why; whether its clip is kept follows in ``ActivationEnded``."""

    activation_id: str
    clip_id: str
    reason: str
    """silence, no_speech, max_length, aborted_by_mute, cancelled_by_user or shutdown."""
    t: float
    wall_time: float


@dataclass(frozen=True)
class ActivationEnded:
    """Every activation ends with exactly one of these, whether or not a clip was kept."""

    activation_id: str
    detection: Detection
    wall_time: float
    """Wall-clock time of the detection (UTC epoch seconds)."""
    clip_id: str | None
    """The clip handed to the sinks, or None when the audio was discarded."""
    reason: str
    duration_s: float
    vad_speech_ratio: float
    likely_false: bool
    run: ScoreRun
    """The run of frames over the threshold that triggered it, as far as it went before the
    activation ended (edge.wake.policy ``run_of``)."""
    audio: np.ndarray | None = None
    """The discarded audio, only for the opt-in false-activation keeper; never logged."""

    @property
    def peak(self) -> float:
        """The activation's peak score: the highest over its whole run. The one number the
        activation log, the sidecar, MQTT, the dashboard and replay show."""
        return self.run.peak


@dataclass(frozen=True)
class StreamStarted:
    """The recorder heard its first frame: listening time starts counting."""

    wall_time: float


@dataclass(frozen=True)
class ThresholdChanged:
    """A model's threshold was changed while running (MQTT ``set_threshold``)."""

    thresholds: Mapping[str, float]
    """Every model's threshold now in force."""
    t: float
    """Stream time of the change, seconds."""
    wall_time: float


@dataclass(frozen=True)
class RunEnded:
    """A run of consecutive frames at or over one model's threshold ended (the detection
    policy reports it): its length and peak tell a spoken wake word from a blip."""

    run: ScoreRun


@dataclass(frozen=True)
class LoopHealth:
    """The audio loop, about once a second of audio while it captures."""

    rtf: float
    """CPU seconds of the audio thread per second of audio (real-time factor)."""
    t: float
    """Stream time, seconds."""
    monotonic: float
    """When it was measured (``time.monotonic``)."""


@dataclass(frozen=True)
class ClipReady:
    """A clip was handed to the sinks."""

    clip: Clip


@dataclass(frozen=True)
class ClipUploaded:
    """The destination acknowledged a clip (the uploader's thread publishes it)."""

    clip_id: str
    destination: str


@dataclass(frozen=True)
class TurnStreamed:
    """An activation's utterance was streamed to a voice assistant (edge.assist), published
    on the audio thread when the turn ends: before its ``ActivationEnded``. Metadata only."""

    activation_id: str
    destination: str
    """Where the audio went, e.g. 'esphome://192.0.2.7:50312' (the ledger's destination)."""
    wake_word: str
    seconds: float
    """Seconds of audio handed over (16 kHz 16-bit mono)."""
    bytes: int
    ended_by: str
    """vad, max_record_s, mute, cancelled, assistant, disconnected, ..."""


@dataclass(frozen=True)
class TranscriptReady:
    """A speech-to-text server transcribed an activation's utterance (edge.assist.stt),
    published on its uploader's thread, after the activation ended. The text is the person's
    words: each subscriber keeps or sends it only where the owner opted in."""

    activation_id: str
    destination: str
    """Where the audio went, e.g. 'http://127.0.0.1:8000' (the ledger's destination)."""
    wake_word: str
    seconds: float
    """Seconds of audio sent (the pre-roll included)."""
    text: str


# ---- what the hardware publishes: what the person did, and what the device could not do


@dataclass(frozen=True)
class MuteChanged:
    """The mute was set or released (the switch, the soft mute or a hardware fault)."""

    muted: bool
    causes: tuple[str, ...]
    """What holds the mute: any of 'switch', 'soft', 'fault'; empty when listening."""
    t: float
    """Stream time, seconds."""
    wall_time: float
    reason: str = ""
    """What changed it, in words (e.g. 'switch', 'muted by command')."""


@dataclass(frozen=True)
class UnmuteRefused:
    """Someone asked to unmute and was not obeyed."""

    requested_by: str
    why: str
    t: float


@dataclass(frozen=True)
class CancelPressed:
    """"That wasn't for you": the button, during a recording or in the window after it."""

    cancelled: bool
    """False when there was nothing to cancel (no recording, and the window had closed)."""
    t: float
    wall_time: float


@dataclass(frozen=True)
class HardwareFault:
    """A part could not be used; the device is muted until it is fixed and restarted."""

    key: str
    """The config key at fault, e.g. 'hardware.mute_pin'."""
    message: str


Event = StateChanged | DetectionEvent | RecordingStarted | RecordingStopped | ActivationEnded | \
    ClipReady | ClipUploaded | TurnStreamed | TranscriptReady | StreamStarted | \
    ThresholdChanged | RunEnded | \
    LoopHealth | MuteChanged | UnmuteRefused | CancelPressed | HardwareFault


class _Subscriber:
    def __init__(self, name: str, fn: Callable[[Event], None], maxsize: int) -> None:
        self.name = name
        self.fn = fn
        self.q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name=f"events-{name}", daemon=True)
        self.thread.start()

    def offer(self, event: object) -> None:
        while True:
            try:
                self.q.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.q.get_nowait()
                    self.dropped += 1
                    if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                        log.warning("subscriber %s is too slow: %d events dropped",
                                    self.name, self.dropped)
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while True:
            event = self.q.get()
            if event is _STOP:
                return
            if isinstance(event, _Flushed):
                event.done.set()
                continue
            try:
                self.fn(event)
            except Exception:
                self.failures += 1
                log.exception("subscriber %s failed on %s", self.name, type(event).__name__)


_STOP = object()


@dataclass(frozen=True)
class _Flushed:
    """The marker ``EventBus.flush`` queues behind every event published before it."""

    done: threading.Event


class _Inline:
    """A subscriber called on the publisher's thread (an ``inline`` bus)."""

    def __init__(self, name: str, fn: Callable[[Event], None]) -> None:
        self.name, self.fn = name, fn
        self.dropped = self.failures = 0

    def offer(self, event: Any) -> None:
        if event is _STOP:
            return
        if isinstance(event, _Flushed):
            event.done.set()
            return
        try:
            self.fn(event)
        except Exception:
            self.failures += 1
            log.exception("subscriber %s failed on %s", self.name, type(event).__name__)


class EventBus:
    """Fan-out of recorder events to subscribers, each on its own thread.

    ``inline=True`` calls each subscriber on the publisher's thread instead, as the event
    happens: for ``edge replay``, which has no audio loop to protect and whose output
    follows the stream. The live daemon never uses it.
    """

    def __init__(self, inline: bool = False) -> None:
        self.inline = inline
        self._subs: list[_Subscriber | _Inline] = []

    def subscribe(self, name: str, fn: Callable[[Event], None], maxsize: int = 1000) -> None:
        self._subs.append(_Inline(name, fn) if self.inline else _Subscriber(name, fn, maxsize))

    def publish(self, event: Event) -> None:
        for s in self._subs:
            s.offer(event)

    def stats(self) -> dict[str, dict[str, int]]:
        return {s.name: {"dropped": s.dropped, "failures": s.failures} for s in self._subs}

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every subscriber has handled what was published before; False if one
        did not within ``timeout`` s (it is stuck)."""
        marks = [_Flushed(threading.Event()) for _ in self._subs]
        for s, mark in zip(self._subs, marks, strict=True):
            s.offer(mark)
        deadline = time.monotonic() + timeout
        return all(m.done.wait(max(0.0, deadline - time.monotonic())) for m in marks)

    def close(self, timeout: float = 2.0) -> None:
        """Let every subscriber finish what it has queued, then stop it."""
        for s in self._subs:
            s.offer(_STOP)
        for s in self._subs:
            if isinstance(s, _Subscriber):
                s.thread.join(timeout)
        self._subs.clear()
