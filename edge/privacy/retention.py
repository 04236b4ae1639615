"""Retention and purge: nothing with audio outlives ``upload.retention_days``, and
``edge purge --yes`` deletes every clip, the outbox and the activation audio at once
(a running recorder does the same through ``UploadPlugin.purge``: one deletion loop,
``purge_places``, serves both).

Expiry goes by a file's modification time (when it was written); queued clips
expire through the outbox, so its index stays consistent. The ledger and the
device id hold no audio and are kept: the ledger is the owner's record of what
left the device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.config import Config
from edge.files import LockFile
from edge.privacy.ledger import Ledger
from edge.privacy.places import AudioPlace, audio_places, ledger_path, lock_path

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass
class Removed:
    label: str
    path: Path
    files: int = 0
    bytes: int = 0


class ExpiringQueue(Protocol):
    """A queue of clips that expires its own entries (the upload outbox), so its index
    stays consistent."""

    @property
    def spool(self) -> Path:
        """Where the queued clips are."""
        ...

    def expire(self, cutoff: float) -> int:
        """Drop entries queued before ``cutoff`` (epoch seconds); how many went."""
        ...


def files_in(place: AudioPlace) -> list[Path]:
    if not place.path.is_dir():
        return []
    seen: dict[Path, None] = {}
    for pattern in place.patterns:
        for f in place.path.glob(pattern):
            if f.is_file():
                seen[f] = None
    return sorted(seen)


def expire(cfg: Config, now: float, outbox: ExpiringQueue | None = None) -> list[Removed]:
    """Delete audio and clip metadata older than the retention; what went, per place."""
    days = cfg.upload.retention_days
    if days <= 0:
        return []
    cutoff = now - days * DAY_S
    out = []
    for place in audio_places(cfg):
        if place.label in ("outbox queue", "outbox index"):
            continue
        r = Removed(place.label, place.path)
        for f in files_in(place):
            try:
                st = f.stat()
                if st.st_mtime < cutoff:
                    f.unlink()
                    r.files += 1
                    r.bytes += st.st_size
            except OSError as exc:
                log.warning("could not delete expired %s: %s", f, exc)
        out.append(r)
    if outbox is not None:
        out.append(Removed("outbox queue", outbox.spool, outbox.expire(cutoff)))
    gone = [r for r in out if r.files]
    if gone:
        log.info("retention (%g days) deleted %s", days,
                 ", ".join(f"{r.files} file(s) from {r.label}" for r in gone))
    return out


def purge(cfg: Config) -> list[Removed]:
    """Delete every clip, the outbox and activation audio; refuse while the recorder runs
    (a running recorder purges itself: ``UploadPlugin.purge``, MQTT ``cmd/purge``)."""
    with LockFile(lock_path(cfg), "the recorder"):
        out = purge_places(cfg)
        if any(r.files for r in out):
            ledger = Ledger(ledger_path(cfg))
            note_purge(ledger, out, "edge purge")
            ledger.close()
        return out


def purge_places(cfg: Config) -> list[Removed]:
    """Delete every file of ours in every place that holds audio; what went, per place.

    It takes no lock: the caller makes sure nothing writes there meanwhile (``purge`` holds
    the state lock; the running recorder's ``UploadPlugin.purge`` pauses its writers).
    """
    out = []
    for place in audio_places(cfg):
        r = Removed(place.label, place.path)
        for f in files_in(place):
            try:
                size = f.stat().st_size
                f.unlink()
            except FileNotFoundError:
                continue
            r.files += 1
            r.bytes += size
        out.append(r)
    return out


def note_purge(ledger: Ledger, removed: list[Removed], by: str) -> None:
    """The ledger's ``purged`` entry (only when something was deleted)."""
    total = sum(r.files for r in removed)
    if total:
        ledger.append(clip="*", result="purged", bytes=sum(r.bytes for r in removed),
                      note=f"{total} file(s) deleted by {by}")
