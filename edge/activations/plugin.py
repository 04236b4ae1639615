"""The activation log, kept by the live daemon.

When the disk is written, and only then:

- an activation ends: its one row (one transaction; opt-in false-wake audio first);
- listening starts (first frame, unmute) or stops (mute, shutdown): a period row;
- every ``checkpoint_s`` of listening (0, the default, turns it off): the period's heard
  time, so a power cut loses at most that much listening time;
- a threshold changes (a new period), a label or an upload acknowledgement arrives.

Nothing is written, or even read, between those. Every SQLite call runs on the log's
own thread: the bus hands it events, other threads (the uploader, the MQTT worker)
enqueue a label or an acknowledgement and return at once, and the audio loop only
counts frames for the checkpoints. A locked, corrupt or unwritable database is
reported (with what to do) and the writes are held in memory and retried at the next
one; the device keeps listening either way.

Why one module of over 400 lines: everything here is the state of one thread (periods,
activations in flight, held labels and writes); split, its parts would share every field.
The SQL is in schema/store, the rows in rows, the kept audio in false_audio.

>>> plugin = ActivationLogPlugin(cfg, clock, clips_kept=True,
...                              thresholds={"hey_jarvis": 0.5})      # doctest: +SKIP
>>> bus.subscribe("activation-log", plugin.on_event)                 # doctest: +SKIP
>>> plugin.label("last", "false", "mqtt").result(timeout=5)          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.activations.false_audio import FalseAudioKeeper
from edge.activations.store import (
    FALSE_AUDIO_DIR,
    ActivationLog,
    ActivationLogError,
    ActivationRow,
    check_label,
    db_path,
    fix_for,
    outcome_for,
)
from edge.audio.frames import FRAME_S
from edge.clock import Clock
from edge.config import Config
from edge.pipeline.events import (
    ActivationEnded,
    ClipReady,
    DetectionEvent,
    State,
    StateChanged,
    StreamStarted,
    ThresholdChanged,
    TranscriptReady,
    TurnStreamed,
)
from edge.pipeline.outcome import LIKELY_FALSE
from edge.wake.verifier import Candidate, Verifier, build_verifier

log = logging.getLogger(__name__)

LISTENING = (State.LISTENING.value, State.RECORDING.value)
MAX_HELD_OPS = 1000
"""Writes held in memory while the database cannot be written; beyond it the oldest go."""
LABEL_GRACE_S = 1.0
"""How long a label for an unknown activation id waits for that activation's events."""


@dataclass
class _Period:
    """A stretch of listening with one set of models and thresholds (a row of the periods
    table)."""

    start_wall: float
    start_t: float
    """Stream time at the start: heard time is stream time since then."""
    models: dict[str, float]
    n: int | None = None
    """Row number, once written."""


@dataclass(frozen=True)
class _Checkpoint:
    """How far listening has got: the period's heard time is written up to here."""

    t: float
    wall: float


@dataclass(frozen=True)
class _Label:
    """A label for an activation, waiting its turn on the log's thread."""

    ref: str
    label: str
    source: str
    at: float
    done: Future[str]
    deadline: float
    """Monotonic time until which an unknown full id waits for its activation's events."""


@dataclass(frozen=True)
class _Uploaded:
    """A clip the destination acknowledged: its activation is marked uploaded."""

    clip_id: str
    at: float


_STOP = object()
Op = Callable[[ActivationLog], None]


class ActivationLogPlugin:
    """Keeps the activation log from the daemon's events, on its own thread."""

    def __init__(self, cfg: Config, clock: Clock, *, clips_kept: bool,
                 thresholds: dict[str, float], verifier: Verifier | None = None) -> None:
        self.cfg = cfg
        self.acfg = cfg.activations
        self.path = db_path(cfg)
        self.clock = clock
        self.clips_kept = clips_kept
        """Whether a clip handed to the sinks is kept (locally or queued for upload)."""
        self.verifier = verifier if verifier is not None else build_verifier(self.acfg)
        self.keeper = (FalseAudioKeeper(Path(cfg.state_path) / FALSE_AUDIO_DIR,
                                        cfg.upload.encrypt_to)
                       if self.acfg.keep_false_activation_audio else None)
        self.store: ActivationLog | None = None
        self.writes = 0
        """Database transactions committed (rows, periods, checkpoints, uploads)."""
        self.dropped_ops = 0
        self._models = dict(thresholds)
        self._q: queue.Queue[object] = queue.Queue(maxsize=2000)
        # Everything below is the log thread's own.
        self._ops: deque[Op] = deque()
        self._in_flight: set[str] = set()
        self._streamed: dict[str, str] = {}
        """Activation id -> where its utterance was streamed, until the activation ends."""
        self._last_id: str | None = None
        self._held_labels: dict[str, list[tuple[str, str, float]]] = {}
        self._waiting_labels: list[_Label] = []
        self._clip_audio: dict[str, tuple[np.ndarray, float]] = {}
        self._period: _Period | None = None
        self._last_t = 0.0
        self._stream_started = False
        self._last_error = ""
        # The audio thread's own: frames counted for the checkpoints.
        self._ck_frames = round(self.acfg.checkpoint_s / FRAME_S)
        self._frames = 0
        self._worker = threading.Thread(target=self._work, name="activation-log", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        """Write what is pending. The daemon flushes the event bus first, so the recorder's
        last events are in the queue before the stop."""
        if self._worker.is_alive():
            self._q.put(_STOP)
            self._worker.join(30.0)
        if self._ops:
            log.error("activation log: %d write(s) could not be saved before exit: %s",
                      len(self._ops), self._last_error)
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- any thread: enqueue and return -------------------------------------------------

    def on_event(self, ev: object) -> None:
        """The bus's subscriber: pass on what the log needs, in order."""
        if isinstance(ev, ClipReady) and not (self.verifier and self.verifier.needs_audio):
            return
        if isinstance(ev, StateChanged | DetectionEvent | ActivationEnded | ClipReady |
                      StreamStarted | ThresholdChanged | TurnStreamed | TranscriptReady):
            self._q.put(ev)

    def label(self, ref: str, label: str, source: str) -> Future[str]:
        """Label an activation (number, id, id prefix or ``last``); the future gives its id,
        or the ``ActivationLogError`` that says why not. An activation still being recorded
        (known by its id from the detection event) gets the label when its row is written.
        """
        check_label(label, source)
        done: Future[str] = Future()
        grace = LABEL_GRACE_S if len(ref) == 36 else 0.0
        try:  # never blocks the caller (the MQTT command worker): a full log says so
            self._q.put_nowait(_Label(ref, label, source, self.clock.wall(), done,
                                      time.monotonic() + grace))
        except queue.Full:
            done.set_exception(ActivationLogError("the activation log is behind; send the "
                                                  "label again in a moment"))
        return done

    def mark_uploaded(self, clip_id: str) -> None:
        """The destination acknowledged ``clip_id``: its outcome becomes ``uploaded``."""
        self._q.put(_Uploaded(clip_id, self.clock.wall()))

    # ---- the audio thread -----------------------------------------------------------------

    def on_frame(self) -> None:
        """A frame was heard: every ``checkpoint_s`` of listening, a checkpoint.

        The first frame also says the stream started, in this same queue: the bus's
        ``StreamStarted`` comes by another thread and could arrive after a checkpoint.
        """
        self._frames += 1
        if self._frames == 1:
            self._q.put(StreamStarted(self.clock.wall()))
        if self._ck_frames and self._frames % self._ck_frames == 0:
            try:
                self._q.put_nowait(_Checkpoint(self._frames * FRAME_S, self.clock.wall()))
            except queue.Full:
                log.warning("activation log is behind; skipped a listening-time checkpoint")

    # ---- the log's thread ---------------------------------------------------------------

    def _work(self) -> None:
        self._open_store()
        while True:
            timeout = (max(0.0, min(w.deadline for w in self._waiting_labels) - time.monotonic())
                       if self._waiting_labels else None)
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                self._retry_labels()
                continue
            if item is _STOP:
                self._final()
                return
            try:
                self._handle(item)
            except Exception:
                log.exception("activation log failed on %s", type(item).__name__)

    def _handle(self, item: object) -> None:
        if isinstance(item, ActivationEnded):
            self._ended(item)
            self._retry_labels()
        elif isinstance(item, DetectionEvent):
            if not item.ignored:
                self._in_flight.add(item.activation_id)
                self._last_id = item.activation_id
                self._retry_labels()
        elif isinstance(item, TurnStreamed):  # comes before its activation's end
            self._streamed[item.activation_id] = item.destination
        elif isinstance(item, ClipReady):
            clip = item.clip
            self._clip_audio[clip.activation_id] = (clip.audio, clip.detection_t - clip.start)
        elif isinstance(item, StateChanged):
            self._state(item)
        elif isinstance(item, StreamStarted):
            # told twice when checkpoints are on (the bus and the frame hook): once counts
            if self._period is None and not self._stream_started:
                self._start_period(item.wall_time, 0.0)
            self._stream_started = True
        elif isinstance(item, _Checkpoint):
            if self._period is not None:
                self._checkpoint(self._period, max(0.0, item.t - self._period.start_t),
                                 item.wall)
        elif isinstance(item, ThresholdChanged):
            self._models = dict(item.thresholds)
            if self._period is not None:
                self._end_period(item.t, "threshold_changed", item.wall_time)
                self._start_period(item.wall_time, item.t)
        elif isinstance(item, _Label):
            self._label(item)
        elif isinstance(item, TranscriptReady):  # comes after its activation's end
            self._transcribed(item)
        elif isinstance(item, _Uploaded):
            uploaded = item

            def write(s: ActivationLog) -> None:
                s.mark_uploaded(uploaded.clip_id, uploaded.at)

            self._submit(write)

    def _transcribed(self, ev: TranscriptReady) -> None:
        """The activation's outcome becomes ``transcribed``; its text is kept only with
        ``assist.stt.keep_transcripts``."""
        text = ev.text if self.cfg.assist.stt.keep_transcripts else None

        def write(s: ActivationLog) -> None:
            if not s.mark_transcribed(ev.activation_id, ev.destination, len(ev.text), text):
                log.warning("activation %s was transcribed, but it is not in the log",
                            ev.activation_id[:8])

        self._submit(write)

    def _final(self) -> None:
        if self._period is not None:
            self._end_period(self._last_t, "stopped")
        for w in self._waiting_labels:
            w.done.set_exception(ActivationLogError(f"no activation {w.ref!r} in the log"))
        self._waiting_labels.clear()
        self._flush()

    def _state(self, ev: StateChanged) -> None:
        self._last_t = ev.t
        was, now = ev.old in LISTENING, ev.new in LISTENING
        if was and not now and self._period is not None:
            self._end_period(ev.t, ev.new)
        elif now and not was and self._period is None and ev.old != State.STOPPED.value:
            self._start_period(self.clock.wall(), ev.t)

    def _start_period(self, wall: float, t: float) -> None:
        p = self._period = _Period(wall, t, dict(self._models))

        def write(s: ActivationLog) -> None:
            p.n = s.open_period(p.start_wall, p.models)

        self._submit(write)

    def _checkpoint(self, p: _Period, heard: float, wall: float) -> None:
        def write(s: ActivationLog) -> None:
            if p.n is not None:
                s.checkpoint(p.n, heard, wall)

        self._submit(write)

    def _end_period(self, t: float, reason: str, wall: float | None = None) -> None:
        p, self._period = self._period, None
        assert p is not None
        heard, wall = max(0.0, t - p.start_t), wall or self.clock.wall()

        def write(s: ActivationLog) -> None:
            if p.n is None:  # its start was never written: write it whole
                p.n = s.open_period(p.start_wall, p.models, heard, wall, reason)
            else:
                s.close_period(p.n, heard, wall, reason)

        self._submit(write)

    def _ended(self, ev: ActivationEnded) -> None:
        d = ev.detection
        peak, frames_over = ev.peak, ev.run.frames  # the whole run's, as every report shows
        flags = [ev.reason] if ev.reason in LIKELY_FALSE else []
        verdict = None
        audio, offset = self._clip_audio.pop(ev.activation_id, (ev.audio, None))
        if self.verifier is not None:
            try:
                verdict = self.verifier.verify(Candidate(
                    ev.activation_id, d.model, d.threshold, peak, frames_over,
                    audio if self.verifier.needs_audio else None, offset))
            except Exception:
                log.exception("verifier %s failed on activation %s", self.verifier.name,
                              ev.activation_id)
            if verdict is not None and verdict.accept is False:
                flags.append("verifier")
        audio_file = None
        if self.keeper is not None and ev.audio is not None:
            try:
                audio_file = f"{FALSE_AUDIO_DIR}/{self.keeper.keep(ev)}"
            except OSError as exc:
                log.error("could not keep the audio of false wake %s: %s", ev.activation_id,
                          exc)
        p = self._period
        streamed_to = self._streamed.pop(ev.activation_id, None)
        row = ActivationRow(
            id=ev.activation_id, wall_time=ev.wall_time, model=d.model, threshold=d.threshold,
            peak_score=round(peak, 6), frames_over=frames_over, clip_id=ev.clip_id,
            duration_s=round(ev.duration_s, 3), vad_speech_ratio=round(ev.vad_speech_ratio, 4),
            end_reason=ev.reason, outcome=outcome_for(ev.reason, ev.clip_id, self.clips_kept,
                                                      streamed=streamed_to is not None),
            likely_false=bool(ev.likely_false or flags), flags=tuple(flags),
            verifier=self.verifier.name if verdict is not None and self.verifier else None,
            verifier_accept=verdict.accept if verdict is not None else None,
            verifier_score=verdict.score if verdict is not None else None,
            audio_file=audio_file, streamed_to=streamed_to,
            period_heard_s=max(0.0, d.t - p.start_t) if p is not None else 0.0)

        def write(s: ActivationLog) -> None:
            final = dataclasses.replace(row, period=p.n if p is not None else None)
            s.record(final, self._held_labels.get(row.id, ()))
            self._held_labels.pop(row.id, None)
            self._in_flight.discard(row.id)

        self._submit(write)

    # ---- labels ---------------------------------------------------------------------------

    def _label(self, w: _Label) -> None:
        ref = self._last_id if w.ref == "last" and self._last_id is not None else w.ref
        if ref in self._in_flight:  # still recording, or its row not written yet
            self._held_labels.setdefault(ref, []).append((w.label, w.source, w.at))
            w.done.set_result(ref)
            return
        try:
            w.done.set_result(self._usable_store().label(ref, w.label, w.source, w.at))
        except ActivationLogError as exc:
            if time.monotonic() < w.deadline:
                self._waiting_labels.append(w)  # its detection event may not be here yet
            else:
                w.done.set_exception(exc)
        except (sqlite3.Error, OSError) as exc:
            w.done.set_exception(ActivationLogError(fix_for(self.path, exc)))

    def _retry_labels(self) -> None:
        waiting, self._waiting_labels = self._waiting_labels, []
        for w in waiting:
            self._label(w)

    # ---- writing, holding and retrying ----------------------------------------------------

    def _submit(self, op: Op) -> None:
        if len(self._ops) >= MAX_HELD_OPS:
            self._ops.popleft()
            self.dropped_ops += 1
            log.error("activation log: %d held write(s) dropped; %s", self.dropped_ops,
                      self._last_error)
        self._ops.append(op)
        self._flush()

    def _flush(self) -> None:
        if not self._ops:
            return
        if self.store is None and not self._open_store():
            return
        assert self.store is not None
        while self._ops:
            try:
                self._ops[0](self.store)
            except (sqlite3.Error, OSError, ActivationLogError) as exc:
                self._failed(exc)
                return
            self._ops.popleft()
            self.writes += 1
        if self._last_error:
            log.warning("activation log %s is writable again; held writes saved", self.path)
            self._last_error = ""

    def _failed(self, exc: BaseException) -> None:
        msg = exc.args[0] if isinstance(exc, ActivationLogError) else fix_for(self.path, exc)
        if msg != self._last_error:
            log.error("%s; the device keeps listening, and %d write(s) wait in memory for "
                      "the next try", msg, len(self._ops))
            self._last_error = msg
        if type(exc) is sqlite3.DatabaseError and self.store is not None:
            self.store.close()  # damaged underneath us: reopen (and re-check) next time
            self.store = None

    def _open_store(self) -> bool:
        try:
            self.store = ActivationLog.open(self.path, check=True)
            closed = self.store.close_dangling_periods()
        except (ActivationLogError, sqlite3.Error, OSError) as exc:
            self.store = None
            self._failed(exc)
            return False
        if closed:
            log.warning("activation log: closed %d listening period(s) left open by an "
                        "unclean stop, at their last checkpoint", closed)
        return True

    def _usable_store(self) -> ActivationLog:
        if self.store is None and not self._open_store():
            raise ActivationLogError(self._last_error)
        assert self.store is not None
        return self.store
