"""Retention and purge: nothing with audio outlives ``upload.retention_days``, and
``edge purge --yes`` deletes every clip, the outbox and the activation audio at once
(a running recorder does the same through ``UploadPlugin.purge``: one deletion loop,
``purge_places``, serves both).

Expiry goes by a file's modification time (when it was written); queued clips
expire through the outbox, so its index stays consistent. The ledger and the
device id hold no audio and are kept: the ledger is the owner's record of what
left the device.

Only what the recorder wrote is deleted, and an admin may run ``edge purge`` with sudo:
a file must have a name we issue (``AudioPlace.names``), be a regular file and belong to
the user running us; no symlink is followed (below the state directory not even to reach
a place, and files are opened and deleted relative to their folder's descriptor); a state
directory that belongs to another user is refused.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.config import Config
from edge.files import LockFile, check_owned
from edge.privacy.ledger import Ledger
from edge.privacy.places import AudioPlace, audio_places, ledger_path, lock_path

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass
class Removed:
    """What a purge removed from one place: files and bytes."""

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


@contextmanager
def _opened(place: AudioPlace) -> Iterator[int | None]:
    """A descriptor of the place's folder, reached without following a symlink below the
    state directory (a place outside it is the owner's configured path); None when it is
    missing, not a folder, or a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    path = Path(os.path.normpath(place.path))
    root = Path(os.path.normpath(place.state_dir))
    try:
        if path.is_relative_to(root):
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            for part in path.relative_to(root).parts:
                try:
                    child = os.open(part, flags, dir_fd=fd)
                finally:
                    os.close(fd)
                fd = child
        else:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a symlink
            log.warning("%s (%s) is a symlink or is reached through one; not following it",
                        path, place.label)
        elif exc.errno != errno.ENOENT:
            log.warning("cannot open %s (%s): %s", path, place.label, exc.strerror)
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _ours(place: AudioPlace, fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each file of ours in the folder ``fd``: a name we issue, a regular
    file (not a symlink), owned by the user running us."""
    me = os.geteuid()
    out = []
    with os.scandir(fd) as entries:
        for e in entries:
            if not place.names.fullmatch(e.name):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid == me:
                out.append((e.name, st))
    return sorted(out)


def files_in(place: AudioPlace) -> list[Path]:
    """The files of ours in ``place`` (what a purge deletes there)."""
    with _opened(place) as fd:
        return [] if fd is None else [place.path / name for name, _ in _ours(place, fd)]


def _delete(place: AudioPlace, older_than: float | None = None) -> Removed:
    """Delete the files of ours in ``place`` (only those last written before
    ``older_than``, when given)."""
    r = Removed(place.label, place.path)
    with _opened(place) as fd:
        if fd is None:
            return r
        for name, st in _ours(place, fd):
            if older_than is not None and st.st_mtime >= older_than:
                continue
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not delete %s: %s", place.path / name, exc)
                continue
            r.files += 1
            r.bytes += st.st_size
    return r


def expire(cfg: Config, now: float, outbox: ExpiringQueue | None = None) -> list[Removed]:
    """Delete audio and clip metadata older than the retention; what went, per place."""
    days = cfg.upload.retention_days
    if days <= 0:
        return []
    cutoff = now - days * DAY_S
    check_owned(cfg.state_path, "state_dir")
    out = []
    for place in audio_places(cfg):
        if place.label in ("outbox queue", "outbox index"):
            continue
        out.append(_delete(place, older_than=cutoff))
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
    check_owned(cfg.state_path, "state_dir")  # before the lock file is made in it
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
    check_owned(cfg.state_path, "state_dir")
    return [_delete(place) for place in audio_places(cfg)]


def note_purge(ledger: Ledger, removed: list[Removed], by: str) -> None:
    """The ledger's ``purged`` entry (only when something was deleted)."""
    total = sum(r.files for r in removed)
    if total:
        ledger.append(clip="*", result="purged", bytes=sum(r.bytes for r in removed),
                      note=f"{total} file(s) deleted by {by}")
