"""The recorder state machine: LISTENING, RECORDING, MUTED and STOPPED.

One thread owns it (the audio loop) and calls ``feed`` once per 80 ms frame.
Everything else (GPIO callbacks, MQTT commands) talks to it through the
runner's command queue, never directly.

On a detection the clip is the pre-roll (the ring buffer, ending with the
triggering frame) plus the frames that follow, until trailing silence after
speech (``silence``), no speech at all (``no_speech``), or the cap
(``max_length``). While muted no frame reaches the detector or the ring buffer.
``follow_up`` starts a recording with no detection and no pre-roll, when a voice assistant
asks to hear more (continue-conversation); it ends the same ways.

What happens is published on the event bus (other threads) and, for state changes,
also handed to ``listeners`` on the audio thread, in order, as it happens: the
hardware chimes, lights and holds the mute from there, never by polling.

Why one module of over 400 lines: it is one state machine; every transition touches the
same recording, ring buffer and held clips, which split modules would share by hand.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE, check_frame
from edge.audio.ringbuffer import RingBuffer
from edge.clock import Clock
from edge.config import RecordConfig
from edge.config.rules import threshold_refusal
from edge.pipeline.clip import Clip
from edge.pipeline.events import (
    ActivationEnded,
    ClipReady,
    DetectionEvent,
    EventBus,
    RecordingStarted,
    RecordingStopped,
    State,
    StateChanged,
    StreamStarted,
    ThresholdChanged,
)
from edge.pipeline.outcome import LIKELY_FALSE
from edge.wake.engine import WakeEngine
from edge.wake.policy import Detection, DetectionPolicy, ScoreRun
from edge.wake.vad import Vad

log = logging.getLogger(__name__)

FOLLOW_UP = "follow-up"
"""The model name of a recording the assistant asked for (``Recorder.follow_up``): it
continues a conversation, with no wake word."""



def _likely_false(reason: str, d: Detection) -> bool:
    """Whether an activation that ended for ``reason`` counts as a false wake (a follow-up
    that heard nothing is someone who had nothing more to say)."""
    return reason in LIKELY_FALSE and d.model != FOLLOW_UP


class StateListener(Protocol):
    """Told of each state change on the audio thread, right after it happened; it may act on
    the recorder (gate it, mute it again)."""

    def state_changed(self, recorder: Recorder, change: StateChanged) -> None: ...


class RecordingTap(Protocol):
    """Told on the audio thread of each recording's audio as it is captured (a voice-assistant
    hand-off streams it): the pre-roll at its start (the wake word included), then each frame
    that joins it, then its end with the reason. The arrays are the recorder's own: copy."""

    def recording_started(self, activation_id: str, detection: Detection,
                          pre_roll: np.ndarray) -> None: ...

    def recording_frame(self, frame: np.ndarray) -> None: ...

    def recording_ended(self, reason: str) -> None: ...


def frames_for(seconds: float) -> int:
    return max(1, round(seconds / FRAME_S))


@dataclass
class _Recording:
    """The recording in progress: its activation, its frames so far and the VAD's count."""

    activation_id: str
    clip_id: str
    detection: Detection
    wall_time: float
    start_frame: int
    frames: list[np.ndarray]
    post_frames: int = 0
    speech_frames: int = 0
    silence_run: int = 0


@dataclass
class _Held:
    """A finished clip held until its cancel window closes."""

    clip: Clip
    detection: Detection
    run: ScoreRun
    release_at: int
    """Frame index at which the cancel window closes and the clip goes to the sinks."""


@dataclass
class RecorderStats:
    """Counts since the recorder started: frames, detections, clips kept and discarded."""

    frames: int = 0
    detections: int = 0
    ignored_detections: int = 0
    clips: int = 0
    discarded: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Recorder:
    """Frames in; detections, clips and events out."""

    def __init__(
        self,
        engine: WakeEngine,
        policy: DetectionPolicy,
        vad: Vad,
        record: RecordConfig,
        pre_roll_s: float,
        bus: EventBus,
        clip_out: Callable[[Clip], None],
        clock: Clock,
        cancel_window_s: float = 0.0,
        keep_no_speech: bool = False,
        keep_false_audio: bool = False,
        listeners: Sequence[StateListener] = (),
        taps: Sequence[RecordingTap] = (),
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.listeners = tuple(listeners)
        self.taps = tuple(taps)
        self.vad = vad
        self.cfg = record
        self.bus = bus
        self.clip_out = clip_out
        self.clock = clock
        self.ring = RingBuffer(frames_for(pre_roll_s), FRAME_SAMPLES)
        self.cancel_frames = round(cancel_window_s / FRAME_S)
        self.keep_no_speech = keep_no_speech
        self.keep_false_audio = keep_false_audio
        self.state = State.LISTENING
        self.frame_index = 0
        self.stats = RecorderStats()
        self._rec: _Recording | None = None
        self._held: list[_Held] = []
        self._gate_until = -1
        self._silence_frames = frames_for(record.silence_s)
        self._no_speech_frames = frames_for(record.no_speech_timeout_s)
        self._max_frames = frames_for(record.max_record_s)
        self._min_speech = max(1, round(record.min_speech_s / FRAME_S))

    # ---- the audio loop -------------------------------------------------

    @property
    def t(self) -> float:
        """Stream time (s) at the end of the last frame fed."""
        return round(self.frame_index * FRAME_S, 6)

    def feed(self, frame: np.ndarray) -> list[tuple[Detection, bool]]:
        """Process one 80 ms frame; returns its detections, each with whether it started a clip.

        A detection during a recording starts nothing (it is reported as ignored).
        """
        if self.state in (State.MUTED, State.STOPPED):
            return []  # muted: the frame never reaches the detector or the ring buffer
        check_frame(frame)
        idx = self.frame_index
        if idx == 0:
            self.bus.publish(StreamStarted(self.clock.wall()))
        self.frame_index += 1
        self.stats.frames += 1
        self.ring.push(frame)
        dets = self.policy.step(self.engine.process(frame), idx)
        if idx < self._gate_until:
            dets = []
        out: list[tuple[Detection, bool]] = []
        if self.state is State.RECORDING:
            assert self._rec is not None
            self._rec.frames.append(frame.copy())
            for tap in self.taps:
                tap.recording_frame(frame)
            for d in dets:
                self.stats.ignored_detections += 1
                self.bus.publish(DetectionEvent(d, self._rec.activation_id, self.clock.wall(),
                                                ignored=True))
                out.append((d, False))
            self._after_frame(frame, idx)
        elif dets:
            best = max(dets, key=lambda d: d.score)
            self._start(best, idx)
            out = [(d, d is best) for d in dets]
        self._release_due(idx)
        return out

    def follow_up(self) -> bool:
        """Start a recording now, without a wake word: the assistant asked to hear more
        (continue-conversation). Its model is ``FOLLOW_UP``; it ends as any recording does,
        and one that hears nothing is not a false wake. False (nothing starts) unless the
        recorder is listening."""
        if self.state is not State.LISTENING:
            return False
        idx = self.frame_index - 1
        self._start(Detection(FOLLOW_UP, 0.0, idx, 0, 0.0), idx)
        return True

    def gate(self, seconds: float) -> None:
        """For the next ``seconds`` (a chime playing), no frame counts as speech or triggers."""
        self._gate_until = max(self._gate_until, self.frame_index + frames_for(seconds))

    def _start(self, d: Detection, idx: int) -> None:
        follow_up = d.model == FOLLOW_UP
        if not follow_up:
            self.stats.detections += 1
        # a follow-up has no pre-roll: what the ring holds is the answer just played
        pre_roll = np.zeros(0, np.int16) if follow_up else self.ring.snapshot()
        rec = _Recording(str(uuid.uuid4()), str(uuid.uuid4()), d, self.clock.wall(),
                         idx + 1 - len(pre_roll) // FRAME_SAMPLES, [pre_roll])
        self._rec = rec
        self.vad.reset()
        for tap in self.taps:  # before the state change: a listener may mute at once
            tap.recording_started(rec.activation_id, d, rec.frames[0])
        if not follow_up:
            self.bus.publish(DetectionEvent(d, rec.activation_id, rec.wall_time))
        self._set_state(State.RECORDING, "follow_up" if follow_up else "detection")
        self.bus.publish(RecordingStarted(rec.activation_id, rec.clip_id, d.model, self.t,
                                          rec.wall_time))

    def _after_frame(self, frame: np.ndarray, idx: int) -> None:
        rec = self._rec
        assert rec is not None
        rec.post_frames += 1
        gated = idx < self._gate_until
        speech = (not gated) and self.vad.speech_probability(frame) >= self.cfg.vad_threshold
        if speech:
            rec.speech_frames += 1
            rec.silence_run = 0
        else:
            rec.silence_run += 1
        heard = rec.speech_frames >= self._min_speech
        if heard and rec.silence_run >= self._silence_frames:
            self._finish("silence")
        elif not heard and rec.post_frames >= self._no_speech_frames:
            self._finish("no_speech")
        elif rec.post_frames >= self._max_frames:
            self._finish("max_length")

    def _finish(self, reason: str) -> None:
        rec = self._rec
        assert rec is not None
        self._rec = None
        for tap in self.taps:
            tap.recording_ended(reason)
        audio = np.concatenate(rec.frames)
        ratio = rec.speech_frames / rec.post_frames if rec.post_frames else 0.0
        start = round(rec.start_frame * FRAME_S, 6)
        run = self.policy.run_of(rec.detection)  # its peak is the activation's, everywhere
        clip = Clip(rec.clip_id, rec.activation_id, rec.detection.model, run.peak,
                    rec.detection.threshold, start, round(start + len(audio) / SAMPLE_RATE, 6),
                    rec.detection.t, reason, ratio, rec.wall_time, audio)
        self._count(reason)
        self.bus.publish(RecordingStopped(rec.activation_id, rec.clip_id, reason, self.t,
                                          self.clock.wall()))
        self._set_state(State.LISTENING, reason)
        if reason == "no_speech" and not self.keep_no_speech:
            self._discard(clip, rec.detection, run, reason)
        elif self.cancel_frames > 0 and reason != "shutdown":
            self._held.append(_Held(clip, rec.detection, run,
                                    self.frame_index + self.cancel_frames))
        else:
            self._release(clip, rec.detection, run)

    def _release(self, clip: Clip, d: Detection, run: ScoreRun) -> None:
        self.stats.clips += 1
        try:
            self.clip_out(clip)
        finally:
            self.bus.publish(ClipReady(clip))
            self.bus.publish(ActivationEnded(clip.activation_id, d, clip.wall_time, clip.id,
                                             clip.reason, clip.duration_s, clip.vad_speech_ratio,
                                             _likely_false(clip.reason, d), run))

    def _discard(self, clip: Clip, d: Detection, run: ScoreRun, reason: str) -> None:
        self.stats.discarded += 1
        audio = clip.audio if self.keep_false_audio else None
        self.bus.publish(ActivationEnded(clip.activation_id, d, clip.wall_time, None, reason,
                                         clip.duration_s, clip.vad_speech_ratio,
                                         _likely_false(reason, d), run, audio))

    def _release_due(self, idx: int) -> None:
        while self._held and self._held[0].release_at <= idx:
            h = self._held.pop(0)
            self._release(h.clip, h.detection, h.run)

    def _set_state(self, new: State, reason: str) -> None:
        if new is not self.state:
            old, self.state = self.state, new
            change = StateChanged(old.value, new.value, self.t, reason)
            # published first: a listener that changes the state again publishes after it
            self.bus.publish(change)
            for listener in self.listeners:
                listener.state_changed(self, change)

    # ---- commands (run on the audio thread through the runner's queue) ----

    def set_threshold(self, model: str, threshold: float) -> None:
        """Change one model's threshold from the next frame on (``KeyError`` for no such
        model, ``ValueError`` below the threshold floor); observers get a ``ThresholdChanged``."""
        refusal = threshold_refusal(threshold, f"the threshold of {model}")
        if refusal:  # the last guard: whoever asks, the device never records every word
            raise ValueError(refusal)
        self.policy.set_threshold(model, threshold)
        self.bus.publish(ThresholdChanged(self.policy.thresholds, self.t, self.clock.wall()))

    def use_detector(self, engine: WakeEngine, policy: DetectionPolicy) -> None:
        """Listen for other wake words from the next frame on (a voice assistant chose them);
        observers get a ``ThresholdChanged`` naming the new models."""
        self.engine, self.policy = engine, policy
        self.bus.publish(ThresholdChanged(self.policy.thresholds, self.t, self.clock.wall()))

    def mute(self, reason: str = "switch", keep_held: bool = False) -> None:
        """Stop hearing: abort any recording (its audio discarded), discard the clips still in
        their cancel window (unless ``keep_held``: a fault, not a person, muted) and zero
        every buffer."""
        if self.state is State.STOPPED:
            return
        self.policy.reset()  # a run over the threshold ends here, before its activation
        self._abort("aborted_by_mute")
        if not keep_held:
            self.drop_held()  # the last utterance, still cancellable: a person muted it
        self._zero()
        self._set_state(State.MUTED, reason)

    def unmute(self, reason: str = "switch") -> None:
        if self.state is State.MUTED:
            self.policy.reset()
            self._set_state(State.LISTENING, reason)

    def cancel(self) -> bool:
        """"That wasn't for you": discard the recording in progress or the last held clip."""
        if self._abort("cancelled_by_user"):
            self._set_state(State.LISTENING, "cancelled_by_user")
            return True
        if self._held:
            h = self._held.pop()
            self._count("cancelled_by_user")
            self._discard(h.clip, h.detection, h.run, "cancelled_by_user")
            return True
        return False

    def release_held(self) -> int:
        """Hand every clip still in its cancel window to the sinks now; how many. A purge
        does this first, so a clip finished before it cannot be written after it."""
        n = len(self._held)
        while self._held:
            h = self._held.pop(0)
            self._release(h.clip, h.detection, h.run)
        return n

    def _abort(self, reason: str) -> bool:
        """Drop the recording in progress, keeping none of its audio."""
        rec, self._rec = self._rec, None
        if rec is None:
            return False
        for tap in self.taps:
            tap.recording_ended(reason)
        self._count(reason)
        self.stats.discarded += 1
        self.bus.publish(RecordingStopped(rec.activation_id, rec.clip_id, reason, self.t,
                                          self.clock.wall()))
        self.bus.publish(ActivationEnded(
            rec.activation_id, rec.detection, rec.wall_time, None, reason,
            round(rec.post_frames * FRAME_S, 3),
            rec.speech_frames / rec.post_frames if rec.post_frames else 0.0, True,
            self.policy.run_of(rec.detection)))
        for f in rec.frames:
            f.fill(0)
        rec.frames.clear()
        return True

    def drop_held(self, reason: str = "aborted_by_mute") -> None:
        """Discard every clip still in its cancel window, zeroing its audio: after a person
        mutes, nothing heard before it leaves."""
        while self._held:
            h = self._held.pop(0)
            clip = h.clip
            self._count(reason)
            self.stats.discarded += 1
            self.bus.publish(ActivationEnded(clip.activation_id, h.detection, clip.wall_time,
                                             None, reason, clip.duration_s,
                                             clip.vad_speech_ratio, True, h.run))
            clip.audio.fill(0)

    def _count(self, reason: str) -> None:
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1

    def end_of_stream(self) -> None:
        """The input ended: finish a recording in progress and release held clips."""
        self.policy.reset()
        if self._rec is not None:
            self._finish("end_of_stream")
        self.release_held()

    def shutdown(self) -> None:
        """Stop for good: keep finished clips, zero every buffer."""
        if self.state is State.STOPPED:
            return
        self.policy.reset()
        if self._rec is not None:
            self._finish("shutdown")
        self.release_held()
        self._zero()
        self._set_state(State.STOPPED, "shutdown")

    def _zero(self) -> None:
        self.ring.zero()
        self.engine.zero()
        self.vad.reset()
