"""The way out of the device, attached to the daemon as one plugin.

``UploadPlugin`` adds the outbox as a clip sink (its ``deliver`` only enqueues,
durably) and runs the ``Uploader`` thread that does the network. With
``upload.mode = "off"`` no outbox, sender or socket is ever made, so no byte of
audio can leave; clips then stay only if ``output.keep_local`` is true, and are
otherwise discarded once their metadata is logged.

The plugin also holds the state directory's lock (so ``edge purge`` cannot run
under a live recorder), enforces ``upload.retention_days`` every hour, and purges
while the daemon runs (``purge``, behind MQTT ``cmd/purge``).

>>> daemon = Daemon(cfg, source, plugins=[UploadPlugin(cfg)])     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from typing import Any

from edge import identity
from edge.bundle import pack
from edge.clip import Clip
from edge.clock import Clock
from edge.config import Config
from edge.crypto import SEALED_CONTENT_TYPE, Sealer, sealer_for
from edge.errors import PurgeError
from edge.ledger import Ledger
from edge.lockfile import LockFile
from edge.outbox import Outbox
from edge.places import ledger_path, lock_path, outbox_dir
from edge.retention import Removed, expire, note_purge, purge_places
from edge.sinks.local import wav_bytes
from edge.uploader import Sender, Uploader

log = logging.getLogger(__name__)

AUDIO_LOOP_WAIT_S = 3.0
"""How long a purge waits for the audio loop to hand over the clips in their cancel window."""
UPLOAD_STOP_S = 5.0
"""How long a purge waits for an upload in flight before it goes on without it."""


class OutboxSink:
    """Puts each clip in the outbox (sealed first when ``upload.encrypt_to`` is set).

    ``guard`` is held around each put; a purge holds it while it swaps ``outbox``.
    """

    name = "outbox"

    def __init__(self, outbox: Outbox, sealer: Sealer | None, queued: Any = None,
                 guard: threading.RLock | None = None) -> None:
        self.outbox = outbox
        self.sealer = sealer
        self.queued = queued
        self.guard = guard or threading.RLock()

    def deliver(self, clip: Clip) -> str:
        meta = clip.metadata()
        if self.sealer is not None:
            payload = self.sealer.seal(pack(meta, wav_bytes(clip)))
            content_type, meta = SEALED_CONTENT_TYPE, {"id": clip.id, "sealed": True}
        else:
            payload, content_type = wav_bytes(clip), "audio/wav"
        with self.guard:
            self.outbox.put(clip.id, payload, content_type, meta)
        if self.queued is not None:
            self.queued()
        return clip.id

    def close(self) -> None:
        pass


class DiscardSink:
    """Upload off and nothing kept: log the clip's metadata, then let the audio go."""

    name = "discard"

    def deliver(self, clip: Clip) -> None:
        log.info("clip %s discarded (upload is off and output.keep_local is false): %s",
                 clip.id, json.dumps(clip.metadata(), sort_keys=True))
        return None

    def close(self) -> None:
        pass


def build_sender(cfg: Config, device_id: str) -> Sender:
    if cfg.upload.mode == "mqtt":
        from edge.sinks.mqtt import MqttSender

        return MqttSender(cfg.upload.mqtt, device_id)
    if cfg.upload.mode == "https":
        from edge.sinks.https import HttpsSender

        return HttpsSender(cfg.upload.https, device_id)
    raise ValueError(f"no sender for upload.mode = {cfg.upload.mode!r}")


class UploadPlugin:
    def __init__(self, cfg: Config, *, sender: Sender | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, drain_s: float = 5.0,
                 retention_every_s: float = 3600.0) -> None:
        self.cfg = cfg
        self.drain_s = drain_s
        self.retention_every_s = retention_every_s
        self._sender = sender
        self._clock = clock
        self._rng = rng
        self.clock: Any = clock
        self.lock = LockFile(lock_path(cfg), "another edge-recorder")
        self.daemon: Any = None
        self.outbox: Outbox | None = None
        self.ledger: Ledger | None = None
        self.uploader: Uploader | None = None
        self.sender: Sender | None = None
        self.sink: OutboxSink | None = None
        self._on_delivered: Any = None
        self._guard = threading.RLock()
        """Held while the outbox is used or swapped: by each put, the sweep and a purge."""
        self._purging = threading.Lock()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="retention", daemon=True)

    def attach(self, daemon: Any) -> None:
        cfg, u = self.cfg, self.cfg.upload
        self.lock.acquire()
        self.daemon = daemon
        self.clock = self._clock or daemon.clock
        if u.mode == "off":
            log.info("upload is off: no audio leaves this device")
            if not cfg.output.keep_local:
                daemon.sinks.append(DiscardSink())
        else:
            self.ledger = Ledger(ledger_path(cfg), self.clock)
            self.outbox = self._open_outbox()
            self.sender = self._sender or build_sender(cfg, identity.device_id(cfg.state_path))
            marks = [p.mark_uploaded for p in daemon.plugins
                     if p is not self and callable(getattr(p, "mark_uploaded", None))]
            self._on_delivered = _each(marks) if marks else None
            self.uploader = self._new_uploader()
            self.sink = OutboxSink(self.outbox, sealer_for(u.encrypt_to), self._wake, self._guard)
            daemon.sinks.append(self.sink)
            self.uploader.start()
            log.info("uploading clips to %s%s (%d queued)", self.sender.destination,
                     ", sealed" if u.encrypt_to else "", self.outbox.count())
        self._sweeper.start()

    def _open_outbox(self) -> Outbox:
        u = self.cfg.upload
        return Outbox(outbox_dir(self.cfg), int(u.outbox_max_mb * 1e6), u.outbox_max_clips,
                      self.ledger, self.clock)

    def _new_uploader(self) -> Uploader:
        assert self.outbox is not None and self.sender is not None
        u = self.cfg.upload
        return Uploader(self.outbox, self.sender, self.ledger, retry_min_s=u.retry_min_s,
                        retry_max_s=u.retry_max_s, clock=self.clock, rng=self._rng,
                        on_delivered=self._on_delivered)

    def _wake(self) -> None:
        if self.uploader is not None:
            self.uploader.wake()

    def _sweep(self) -> None:
        while True:
            try:
                with self._guard:
                    expire(self.cfg, self.clock.wall(), self.outbox)
            except Exception:
                log.exception("retention sweep failed")
            if self._stop.wait(self.retention_every_s):
                return

    # -- purge while running ----------------------------------------------------------------

    def purge(self) -> list[Removed]:
        """Delete every clip, the whole outbox and the false-activation audio while the
        daemon runs (MQTT ``cmd/purge``; ``edge purge`` needs the recorder stopped); what
        went, per place, and a ``purged`` ledger entry.

        It removes every clip finished before it: a clip still in its cancel window and
        the clips queued for the sinks are written first, then deleted with the rest, and
        clips held in memory for a failing sink are dropped. A recording in progress is
        kept when it ends, like any later one. Meanwhile no sink writes and the uploader
        stops (an upload already in flight may still arrive); both go on afterwards, on a
        fresh outbox.
        """
        with self._purging:
            if self._stop.is_set():
                raise PurgeError("purge: the recorder is stopping; once it has stopped, run "
                                 "`edge purge --yes`")
            self._release_held()
            dispatcher = getattr(self.daemon, "dispatcher", None)
            pause = (dispatcher.paused(drop_held=True) if dispatcher is not None
                     else contextlib.nullcontext(0))
            with pause as dropped, self._guard:
                in_flight = self._stop_uploader()
                try:
                    if self.outbox is not None:
                        self.outbox.close()
                    out = purge_places(self.cfg)
                    if dropped:
                        out.append(Removed("unwritten clips in memory", self.cfg.state_path,
                                           dropped))
                    self._note_purge(out)
                finally:
                    if self.outbox is not None:
                        self._reopen(in_flight)
        log.warning("purged while running: %s",
                    ", ".join(f"{r.files} file(s) from {r.label}" for r in out))
        return out

    def _release_held(self) -> None:
        """Have the audio loop hand over the clips in their cancel window, and wait."""
        if getattr(self.daemon, "runner", None) is None:
            return
        done = threading.Event()

        def release(recorder: Any) -> None:
            try:
                recorder.release_held()
            finally:
                done.set()

        self.daemon.post(release)
        if not done.wait(AUDIO_LOOP_WAIT_S):
            log.warning("the audio loop did not answer within %g s; a clip in its cancel "
                        "window may be written after the purge", AUDIO_LOOP_WAIT_S)

    def _stop_uploader(self) -> Uploader | None:
        """Stop the uploader; the old one if an upload is still in flight, else None."""
        old = self.uploader
        if old is None or old.stop(UPLOAD_STOP_S):
            return None
        log.warning("an upload to %s was in flight during the purge; that clip may still "
                    "arrive there", old.sender.destination)
        return old

    def _note_purge(self, out: list[Removed]) -> None:
        by = "a purge while the recorder ran"
        if self.ledger is not None:
            note_purge(self.ledger, out, by)
        elif any(r.files for r in out):
            ledger = Ledger(ledger_path(self.cfg), self.clock)
            note_purge(ledger, out, by)
            ledger.close()

    def _reopen(self, in_flight: Uploader | None) -> None:
        """A fresh outbox for the sink, and a fresh uploader on it (started once the old
        one has returned from an upload still in flight)."""
        assert self.sink is not None
        self.outbox = self.sink.outbox = self._open_outbox()
        self.uploader = self._new_uploader()
        if in_flight is None:
            self.uploader.start()
        else:
            threading.Thread(target=self._start_after, args=(in_flight, self.uploader),
                             name="uploader-restart", daemon=True).start()

    def _start_after(self, old: Uploader, new: Uploader) -> None:
        old.stop(timeout=3600.0)  # the sender's own timeouts end the upload long before
        with self._guard:
            if not self._stop.is_set():
                new.start()

    def close(self) -> None:
        self._stop.set()
        with self._purging, self._guard:
            pass  # a purge under way finishes (and a pending uploader restart sees the stop)
        if self._sweeper.is_alive():
            self._sweeper.join(5.0)
        stopped = True
        if self.uploader is not None:
            if self.drain_s > 0:
                self.uploader.wait_idle(self.drain_s)
            stopped = self.uploader.stop()
            if not stopped:
                log.warning("an upload was still in flight at exit; its clip stays queued")
        if stopped:
            if self.sender is not None:
                self.sender.close()
            if self.outbox is not None:
                left = self.outbox.count()
                if left:
                    log.info("%d clip(s) stay queued in the outbox for the next start", left)
                self.outbox.close()
            if self.ledger is not None:
                self.ledger.close()
        self.lock.release()


def _each(fns: list[Any]) -> Any:
    def call(clip_id: str) -> None:
        for fn in fns:
            fn(clip_id)
    return call
