"""The way out of the device: the upload subsystem.

``UploadPlugin`` offers the outbox as a clip sink (its ``deliver`` only enqueues,
durably) and runs the ``Uploader`` thread that does the network. With
``upload.mode = "off"`` no outbox, sender or socket is ever made, so no byte of
audio can leave; clips then stay only if ``output.keep_local`` is true, and are
otherwise discarded once their metadata is logged.

It also holds the state directory's lock (so ``edge purge`` cannot run under a
live recorder), enforces ``upload.retention_days`` every hour, and empties its
stores for a purge while the daemon runs (edge.upload.live_purge).

>>> upload = UploadPlugin(cfg, clock)            # doctest: +SKIP
>>> sinks.append(upload.sink); upload.start()     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from edge.clock import Clock
from edge.config import Config
from edge.errors import PurgeError
from edge.files import LockFile
from edge.privacy import identity
from edge.privacy.crypto import sealer_for
from edge.privacy.ledger import Ledger
from edge.privacy.places import ledger_path, lock_path, outbox_dir
from edge.privacy.retention import Removed, expire, note_purge, purge_places
from edge.sinks.base import ClipSink
from edge.sinks.outbox import DiscardSink, OutboxSink
from edge.upload.queue import Outbox
from edge.upload.uploader import Sender, Uploader

log = logging.getLogger(__name__)

UPLOAD_STOP_S = 5.0
"""How long a purge waits for an upload in flight before it goes on without it."""


def build_sender(cfg: Config, device_id: str) -> Sender:
    if cfg.upload.mode == "mqtt":
        from edge.upload.senders.mqtt import MqttSender

        return MqttSender(cfg.upload.mqtt, device_id)
    if cfg.upload.mode == "https":
        from edge.upload.senders.https import HttpsSender

        return HttpsSender(cfg.upload.https, device_id)
    raise ValueError(f"no sender for upload.mode = {cfg.upload.mode!r}")


class UploadPlugin:
    def __init__(self, cfg: Config, clock: Clock, *, sender: Sender | None = None,
                 rng: random.Random | None = None,
                 on_delivered: Callable[[str], None] | None = None, drain_s: float = 5.0,
                 retention_every_s: float = 3600.0) -> None:
        self.cfg = cfg
        self.clock = clock
        self.drain_s = drain_s
        self.retention_every_s = retention_every_s
        self._rng = rng
        self._on_delivered = on_delivered
        self.lock = LockFile(lock_path(cfg), "another edge-recorder").acquire()
        self.outbox: Outbox | None = None
        self.ledger: Ledger | None = None
        self.uploader: Uploader | None = None
        self.sender: Sender | None = None
        self.sink: ClipSink | None = None
        """What this subsystem adds to the clip sinks: the outbox, discarding, or nothing."""
        self._outbox_sink: OutboxSink | None = None
        self._guard = threading.RLock()
        """Held while the outbox is used or swapped: by each put, the sweep and a purge."""
        self._purging = threading.Lock()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="retention", daemon=True)
        u = cfg.upload
        if u.mode == "off":
            if not cfg.output.keep_local:
                self.sink = DiscardSink()
            return
        self.ledger = Ledger(ledger_path(cfg), self.clock)
        self.outbox = self._open_outbox()
        self.sender = sender or build_sender(cfg, identity.device_id(cfg.state_path))
        self.uploader = self._new_uploader()
        self.sink = self._outbox_sink = OutboxSink(self.outbox, sealer_for(u.encrypt_to),
                                                   self._wake, self._guard)

    def start(self) -> None:
        if self.uploader is None:
            if self.cfg.assist.mode == "off":
                log.info("upload is off: no audio leaves this device")
            else:
                log.info("upload is off: no clip is uploaded (the voice assistant, assist.mode "
                         "= %r, streams each utterance after a wake word)", self.cfg.assist.mode)
        else:
            assert self.sender is not None and self.outbox is not None
            self.uploader.start()
            log.info("uploading clips to %s%s (%d queued)", self.sender.destination,
                     ", sealed" if self.cfg.upload.encrypt_to else "", self.outbox.count())
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

    def check_running(self) -> None:
        """Refuse a live purge once the recorder is stopping."""
        if self._stop.is_set():
            raise PurgeError("purge: the recorder is stopping; once it has stopped, run "
                             "`edge purge --yes`")

    def purge(self, pause_sinks: AbstractContextManager[int]) -> list[Removed]:
        """Delete every clip, the whole outbox and the false-activation audio while the
        daemon runs; what went, per place, and a ``purged`` ledger entry. ``pause_sinks``
        keeps the clip sinks still meanwhile and says how many unwritten clips it dropped
        (edge.upload.live_purge has the audio loop hand over held clips first).

        No sink writes and the uploader stops (an upload already in flight may still
        arrive); both go on afterwards, on a fresh outbox.
        """
        with self._purging:
            self.check_running()
            with pause_sinks as dropped, self._guard:
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
        assert self._outbox_sink is not None
        self.outbox = self._outbox_sink.outbox = self._open_outbox()
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
