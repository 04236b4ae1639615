"""The way out of the device, attached to the daemon as one plugin.

``UploadPlugin`` adds the outbox as a clip sink (its ``deliver`` only enqueues,
durably) and runs the ``Uploader`` thread that does the network. With
``upload.mode = "off"`` no outbox, sender or socket is ever made, so no byte of
audio can leave; clips then stay only if ``output.keep_local`` is true, and are
otherwise discarded once their metadata is logged.

The plugin also holds the state directory's lock (so ``edge purge`` cannot run
under a live recorder) and enforces ``upload.retention_days`` every hour.

>>> daemon = Daemon(cfg, source, plugins=[UploadPlugin(cfg)])     # doctest: +SKIP
"""

from __future__ import annotations

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
from edge.ledger import Ledger
from edge.lockfile import LockFile
from edge.outbox import Outbox
from edge.places import ledger_path, lock_path, outbox_dir
from edge.retention import expire
from edge.sinks.local import wav_bytes
from edge.uploader import Sender, Uploader

log = logging.getLogger(__name__)


class OutboxSink:
    """Puts each clip in the outbox (sealed first when ``upload.encrypt_to`` is set)."""

    name = "outbox"

    def __init__(self, outbox: Outbox, sealer: Sealer | None, queued: Any = None) -> None:
        self.outbox = outbox
        self.sealer = sealer
        self.queued = queued

    def deliver(self, clip: Clip) -> str:
        meta = clip.metadata()
        if self.sealer is not None:
            payload = self.sealer.seal(pack(meta, wav_bytes(clip)))
            self.outbox.put(clip.id, payload, SEALED_CONTENT_TYPE, {"id": clip.id, "sealed": True})
        else:
            self.outbox.put(clip.id, wav_bytes(clip), "audio/wav", meta)
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
        self.outbox: Outbox | None = None
        self.ledger: Ledger | None = None
        self.uploader: Uploader | None = None
        self.sender: Sender | None = None
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="retention", daemon=True)

    def attach(self, daemon: Any) -> None:
        cfg, u = self.cfg, self.cfg.upload
        self.lock.acquire()
        self.clock = self._clock or daemon.clock
        if u.mode == "off":
            log.info("upload is off: no audio leaves this device")
            if not cfg.output.keep_local:
                daemon.sinks.append(DiscardSink())
        else:
            self.ledger = Ledger(ledger_path(cfg), self.clock)
            self.outbox = Outbox(outbox_dir(cfg), int(u.outbox_max_mb * 1e6), u.outbox_max_clips,
                                 self.ledger, self.clock)
            self.sender = self._sender or build_sender(cfg, identity.device_id(cfg.state_path))
            marks = [p.mark_uploaded for p in daemon.plugins
                     if p is not self and callable(getattr(p, "mark_uploaded", None))]
            self.uploader = Uploader(self.outbox, self.sender, self.ledger,
                                     retry_min_s=u.retry_min_s, retry_max_s=u.retry_max_s,
                                     clock=self.clock, rng=self._rng,
                                     on_delivered=_each(marks) if marks else None)
            daemon.sinks.append(OutboxSink(self.outbox, sealer_for(u.encrypt_to),
                                           self.uploader.wake))
            self.uploader.start()
            log.info("uploading clips to %s%s (%d queued)", self.sender.destination,
                     ", sealed" if u.encrypt_to else "", self.outbox.count())
        self._sweeper.start()

    def _sweep(self) -> None:
        while True:
            try:
                expire(self.cfg, self.clock.wall(), self.outbox)
            except Exception:
                log.exception("retention sweep failed")
            if self._stop.wait(self.retention_every_s):
                return

    def close(self) -> None:
        self._stop.set()
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
