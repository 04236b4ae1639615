"""The activation log attached to the live daemon.

When the disk is written, and only then:

- an activation ends: its one row (one transaction; opt-in false-wake audio first);
- listening starts (first frame, unmute) or stops (mute, shutdown): a period row;
- every ``checkpoint_s`` of listening (default an hour): the period's heard time,
  so a power cut loses at most that much listening time (0 turns it off);
- a label or an upload acknowledgement arrives.

Nothing is written, or even read, between those. The work runs on the log's own
thread: the audio loop only appends to queues. A locked, corrupt or unwritable
database is reported (with what to do) and the writes are held in memory and
retried at the next one; the device keeps listening either way.

>>> plugin = ActivationLogPlugin(cfg)
>>> daemon = Daemon(cfg, source, plugins=[plugin])   # doctest: +SKIP
>>> plugin.label("last", "false", "mqtt")            # doctest: +SKIP
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.activations import (
    FALSE_AUDIO_DIR,
    ActivationLog,
    ActivationLogError,
    ActivationRow,
    check_label,
    db_path,
    fix_for,
    outcome_for,
)
from edge.clock import Clock, SystemClock
from edge.engine import SAMPLE_RATE
from edge.events import ActivationEnded, ClipReady, DetectionEvent, State, StateChanged
from edge.fsutil import atomic_write
from edge.policy import FRAME_S, DetectionPolicy
from edge.recorder import LIKELY_FALSE
from edge.verifier import Candidate, Verifier, build_verifier

log = logging.getLogger(__name__)

LISTENING = (State.LISTENING.value, State.RECORDING.value)
MAX_HELD_OPS = 1000
"""Writes held in memory while the database cannot be written; beyond it the oldest go."""
LABEL_GRACE_S = 1.0
"""How long a label for an unknown activation id waits for that activation's events."""


@dataclass(frozen=True)
class Run:
    """A run of consecutive frames at or over one model's threshold."""

    model: str
    first: int
    last: int
    peak: float

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


class ScoreTap:
    """Wraps the wake engine to note each run of frames at or over a model's threshold.

    Runs on the audio thread (one comparison per model per frame). The detector
    decides on the first ``patience`` frames of a run; the log records the whole
    run: its length and its peak are what tell a spoken wake word from a blip.
    """

    def __init__(self, engine: Any, policy: DetectionPolicy, keep: int = 64) -> None:
        self.engine = engine
        self.policy = policy
        self._names = tuple(engine.model_names)
        self._frame = 0
        self._first = [-1] * len(self._names)
        self._peak = [0.0] * len(self._names)
        self._runs: deque[Run] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def model_names(self) -> tuple[str, ...]:
        return self._names

    def process(self, frame: np.ndarray) -> np.ndarray:
        scores = self.engine.process(frame)
        idx = self._frame
        self._frame += 1
        models = self.policy.models
        for i in range(min(len(self._first), len(models))):
            s = float(scores[i])
            if s >= models[i].threshold:
                if self._first[i] < 0:
                    self._first[i], self._peak[i] = idx, s
                elif s > self._peak[i]:
                    self._peak[i] = s
            elif self._first[i] >= 0:
                self._end(i, idx - 1)
        return scores

    def _end(self, i: int, last: int) -> None:
        with self._lock:
            self._runs.append(Run(self._names[i], self._first[i], last, self._peak[i]))
        self._first[i] = -1

    def _end_all(self) -> None:
        for i in range(len(self._first)):
            if self._first[i] >= 0:
                self._end(i, self._frame - 1)

    def reset(self) -> None:
        self._end_all()
        self.engine.reset()

    def zero(self) -> None:
        self._end_all()
        zero = getattr(self.engine, "zero", None)
        if zero is not None:
            zero()

    def run_for(self, model: str, frame_index: int) -> Run | None:
        """The finished run of ``model`` that holds ``frame_index`` (any thread)."""
        with self._lock:
            for r in reversed(self._runs):
                if r.model == model and r.first <= frame_index <= r.last:
                    return r
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class FalseAudioKeeper:
    """Opt-in audio of likely-false wakes in ``state_dir/false_audio``, sealed when
    ``upload.encrypt_to`` is set. Retention (``upload.retention_days``) and
    ``edge purge`` cover the directory (edge.retention, edge.places)."""

    def __init__(self, directory: Path, encrypt_to: str = "") -> None:
        self.directory = directory
        self._sealer: Any = None
        if encrypt_to:
            from edge.crypto import sealer_for

            self._sealer = sealer_for(encrypt_to)

    def keep(self, ev: ActivationEnded) -> str:
        """Write the event's audio; the file name (under ``directory``)."""
        from edge.wavio import encode_wav

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = encode_wav(ev.audio, SAMPLE_RATE)
        if self._sealer is not None:
            from edge.bundle import pack

            d = ev.detection
            meta = {"id": ev.activation_id, "activation_id": ev.activation_id,
                    "model": d.model, "score": d.score, "threshold": d.threshold,
                    "reason": ev.reason, "wall_time": ev.wall_time, "duration_s": ev.duration_s,
                    "sample_rate": SAMPLE_RATE, "kind": "false_activation"}
            name = f"{ev.activation_id}.sealed"
            atomic_write(self.directory / name, self._sealer.seal(pack(meta, data)))
        else:
            name = f"{ev.activation_id}.wav"
            atomic_write(self.directory / name, data)
        return name


@dataclass
class _Period:
    start_wall: float
    start_t: float
    """Stream time at the start: heard time is stream time since then."""
    models: dict[str, float]
    n: int | None = None
    """Row number, once written."""


@dataclass(frozen=True)
class _Start:
    wall: float


@dataclass(frozen=True)
class _Checkpoint:
    t: float
    wall: float


@dataclass(frozen=True)
class _Thresholds:
    t: float
    wall: float
    models: dict[str, float]


@dataclass(frozen=True)
class _Final:
    t: float


_STOP = object()
Op = Callable[[ActivationLog], None]


class ActivationLogPlugin:
    """Subscribes to the daemon's events and keeps the activation log."""

    def __init__(self, cfg: Any, verifier: Verifier | None = None,
                 clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.acfg = cfg.activations
        self.path = db_path(cfg)
        self.verifier = verifier if verifier is not None else build_verifier(self.acfg)
        self._given_clock = clock
        self.clock: Clock = clock or SystemClock()
        self.keeper: FalseAudioKeeper | None = None
        self.store: ActivationLog | None = None
        self.tap: ScoreTap | None = None
        self.writes = 0
        """Database transactions committed (rows, periods, checkpoints, uploads)."""
        self.dropped_ops = 0
        self._daemon: Any = None
        self._models: dict[str, float] = {}
        self._policies: list[Any] = []
        self._q: queue.Queue[Any] = queue.Queue(maxsize=2000)
        self._ops: deque[Op] = deque()
        self._lock = threading.RLock()
        self._in_flight: set[str] = set()
        self._last_id: str | None = None
        self._held_labels: dict[str, list[tuple[str, str, float]]] = {}
        self._clip_audio: dict[str, tuple[np.ndarray, float]] = {}
        self._period: _Period | None = None
        self._stopped = threading.Event()
        self._hook_started = False
        self._ck_frames = round(self.acfg.checkpoint_s / FRAME_S)
        self._next_ck = self._ck_frames
        self._last_error = ""
        self._worker = threading.Thread(target=self._work, name="activation-log", daemon=True)

    # ---- Plugin -------------------------------------------------------------

    def attach(self, daemon: Any) -> None:
        self._daemon = daemon
        self.clock = self._given_clock or daemon.clock
        detector = daemon.detector
        self.tap = ScoreTap(detector.engine, detector.policy)
        detector.engine = self.tap
        self._models = {m.model: m.threshold for m in detector.policy.models}
        self._policies = list(detector.policy.models)
        if self.acfg.keep_false_activation_audio:
            self.keeper = FalseAudioKeeper(Path(self.cfg.state_path) / FALSE_AUDIO_DIR,
                                           self.cfg.upload.encrypt_to)
        self._open_store()
        daemon.bus.subscribe("activation-log", self._forward)
        daemon.on_frame.append(self._on_frame)
        self._worker.start()

    def close(self) -> None:
        rec = getattr(self._daemon, "recorder", None) if self._daemon is not None else None
        if rec is not None and rec.state is State.STOPPED:
            # the recorder published its last events; let them reach us first
            self._stopped.wait(5.0)
        if self._worker.is_alive():
            self._q.put(_Final(rec.t if rec is not None else 0.0))
            self._q.put(_STOP)
            self._worker.join(30.0)
        with self._lock:
            if self._ops:
                log.error("activation log: %d write(s) could not be saved before exit: %s",
                          len(self._ops), self._last_error)
            if self.store is not None:
                self.store.close()
                self.store = None

    # ---- for other subsystems (any thread) --------------------------------

    def label(self, ref: str, label: str, source: str) -> str:
        """Label an activation (number, id, id prefix or ``last``); returns its id.

        An activation still being recorded (known by its id from the detection
        event) gets the label when its row is written.
        """
        check_label(label, source)
        at = self.clock.wall()
        # the caller may have the id from the detection event before this thread does
        deadline = time.monotonic() + (LABEL_GRACE_S if len(ref) == 36 else 0.0)
        while True:
            with self._lock:
                if ref == "last" and self._last_id is not None:
                    ref = self._last_id  # perhaps still recording, or not yet written
                if ref in self._in_flight:
                    self._held_labels.setdefault(ref, []).append((label, source, at))
                    return ref
                try:
                    return self._usable_store().label(ref, label, source, at)
                except ActivationLogError:
                    if time.monotonic() >= deadline:
                        raise
            time.sleep(0.02)

    def mark_uploaded(self, clip_id: str) -> bool:
        """The destination acknowledged ``clip_id``: its outcome becomes ``uploaded``."""
        at = self.clock.wall()

        def write(s: ActivationLog) -> None:
            s.mark_uploaded(clip_id, at)

        with self._lock:
            self._submit(write)
            return not self._ops

    # ---- the audio thread ---------------------------------------------------

    def _on_frame(self) -> None:
        if not self._hook_started:
            self._hook_started = True
            self._offer(_Start(self.clock.wall()))
        fi = self._daemon.recorder.frame_index
        if self._ck_frames and fi >= self._next_ck:
            self._next_ck = fi + self._ck_frames
            self._offer(_Checkpoint(fi * FRAME_S, self.clock.wall()))
        models = self._daemon.detector.policy.models
        if any(a is not b for a, b in zip(models, self._policies, strict=False)):
            # a threshold was changed at run time (MQTT set_threshold): a new period, so
            # listening hours stay attributed to the threshold in force
            self._policies = list(models)
            self._offer(_Thresholds((fi - 1) * FRAME_S, self.clock.wall(),
                                    {m.model: m.threshold for m in models}))

    def _offer(self, item: Any) -> None:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            log.warning("activation log is behind; skipped a listening-time update")

    # ---- the log's thread ---------------------------------------------------

    def _forward(self, ev: Any) -> None:
        """On the bus's thread: pass on what the log needs, in order."""
        if isinstance(ev, ClipReady) and not (self.verifier and self.verifier.needs_audio):
            return
        if isinstance(ev, StateChanged | DetectionEvent | ActivationEnded | ClipReady):
            self._q.put(ev)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            try:
                self._handle(item)
            except Exception:
                log.exception("activation log failed on %s", type(item).__name__)

    def _handle(self, item: Any) -> None:
        if isinstance(item, ActivationEnded):
            self._ended(item)
        elif isinstance(item, DetectionEvent):
            if not item.ignored:
                with self._lock:
                    self._in_flight.add(item.activation_id)
                    self._last_id = item.activation_id
        elif isinstance(item, ClipReady):
            clip = item.clip
            self._clip_audio[clip.activation_id] = (clip.audio,
                                                    clip.detection_t - clip.start)
        elif isinstance(item, StateChanged):
            self._state(item)
        elif isinstance(item, _Start):
            if self._period is None:
                self._start_period(item.wall, 0.0)
        elif isinstance(item, _Checkpoint):
            if self._period is not None:
                self._checkpoint(self._period, max(0.0, item.t - self._period.start_t),
                                 item.wall)
        elif isinstance(item, _Thresholds):
            self._models = item.models
            if self._period is not None:
                self._end_period(item.t, "threshold_changed", item.wall)
                self._start_period(item.wall, item.t)
        elif isinstance(item, _Final):
            if self._period is not None:
                self._end_period(item.t, "stopped")
            self._flush()

    def _state(self, ev: StateChanged) -> None:
        was, now = ev.old in LISTENING, ev.new in LISTENING
        if was and not now and self._period is not None:
            self._end_period(ev.t, ev.new)
        elif now and not was and self._period is None and ev.old != State.STOPPED.value:
            self._start_period(self.clock.wall(), ev.t)
        if ev.new == State.STOPPED.value:
            self._stopped.set()

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
        run = self.tap.run_for(d.model, d.frame_index) if self.tap is not None else None
        peak = max(d.score, run.peak) if run else d.score
        frames_over = max(d.frames_over, run.frames) if run else d.frames_over
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
        row = ActivationRow(
            id=ev.activation_id, wall_time=ev.wall_time, model=d.model, threshold=d.threshold,
            peak_score=round(peak, 6), frames_over=frames_over, clip_id=ev.clip_id,
            duration_s=round(ev.duration_s, 3), vad_speech_ratio=round(ev.vad_speech_ratio, 4),
            end_reason=ev.reason, outcome=outcome_for(ev.reason, ev.clip_id, self._sinks_keep()),
            likely_false=bool(ev.likely_false or flags), flags=tuple(flags),
            verifier=self.verifier.name if verdict is not None and self.verifier else None,
            verifier_accept=verdict.accept if verdict is not None else None,
            verifier_score=verdict.score if verdict is not None else None,
            audio_file=audio_file,
            period_heard_s=max(0.0, d.t - p.start_t) if p is not None else 0.0)

        def write(s: ActivationLog) -> None:
            with self._lock:
                final = dataclasses.replace(row, period=p.n if p is not None else None)
                s.record(final, self._held_labels.get(row.id, ()))
                self._held_labels.pop(row.id, None)
                self._in_flight.discard(row.id)

        self._submit(write)

    def _sinks_keep(self) -> bool:
        """Whether a clip handed to the sinks is kept (locally or queued for upload)."""
        sinks = getattr(getattr(self._daemon, "dispatcher", None), "sinks", None)
        if sinks is None:
            return True
        return any(getattr(s, "name", "") != "discard" for s in sinks)

    # ---- writing, holding and retrying ----------------------------------------

    def _submit(self, op: Op) -> None:
        with self._lock:
            if len(self._ops) >= MAX_HELD_OPS:
                self._ops.popleft()
                self.dropped_ops += 1
                log.error("activation log: %d held write(s) dropped; %s", self.dropped_ops,
                          self._last_error)
            self._ops.append(op)
        self._flush()

    def _flush(self) -> None:
        with self._lock:
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
        with self._lock:
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

