"""The outbox: a durable, bounded queue of clips waiting to leave the device.

Layout under ``<state_dir>/outbox/``::

    outbox.sqlite3   the index (WAL, synchronous=FULL): one row per queued clip
    spool/<id>.clip  the clip as a bundle (JSON head + payload): temp file, fsync, rename
    quarantine/      entries that could not be read, kept for the owner to inspect

Crash safety, whatever moment the process dies at:

* ``put`` writes the spool file before its row. A spool file without a row is
  adopted when the outbox opens (its head says everything the row held); a torn
  temp file is removed.
* A clip leaves only through ``_remove``: the row is marked ``gone`` (durably),
  then the file is unlinked, then the row deleted. An interrupted removal is
  finished at the next open, so a delivered clip is never resurrected.
* ``read`` checks the payload against its sha256; an entry that fails is moved to
  ``quarantine/`` (logged, counted, in the ledger) instead of stopping the queue.

Beyond ``max_clips`` or ``max_bytes`` the oldest clip is dropped (logged, counted,
in the ledger). ``put`` never touches the network; the ``Uploader`` does that.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.clock import Clock, SystemClock
from edge.files import ENTRY_ID, SQLITE_CACHE, atomic_write, fsync_dir, private_db, private_dir
from edge.privacy.bundle import BundleError, pack, unpack
from edge.privacy.ledger import Ledger

log = logging.getLogger(__name__)

DB_FILE = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id           TEXT PRIMARY KEY,
    created      REAL NOT NULL,
    size         INTEGER NOT NULL,
    payload_size INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    meta         TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try     REAL NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    gone         TEXT
)
"""
_COLUMNS = "id, created, size, payload_size, sha256, content_type, meta, attempts, next_try"


@dataclass(frozen=True)
class Entry:
    """One clip waiting in the outbox: its spool file and what will leave the device."""

    id: str
    created: float
    """Wall-clock time the clip entered the outbox (UTC epoch seconds)."""
    size: int
    """Bytes on disk (the spool file)."""
    payload_size: int
    sha256: str
    """Of the payload: exactly the bytes that leave the device."""
    content_type: str
    meta: dict[str, Any]
    attempts: int
    next_try: float


class CorruptEntry(Exception):
    """The entry could not be read; it has been quarantined."""


class EntryGone(Exception):
    """The entry left the outbox (delivered, dropped or expired) while it was being read."""


class Outbox:
    def __init__(self, directory: Path, max_bytes: int = 200_000_000, max_clips: int = 1000,
                 ledger: Ledger | None = None, clock: Clock | None = None) -> None:
        self.directory = directory
        self.spool = directory / "spool"
        self.quarantine_dir = directory / "quarantine"
        self.max_bytes = max_bytes
        self.max_clips = max_clips
        self.ledger = ledger
        self.clock = clock or SystemClock()
        self.dropped = 0
        self.quarantined = 0
        self.expired = 0
        self._lock = threading.RLock()
        for d in (directory, self.spool, self.quarantine_dir):
            private_dir(d)
        self._db = self._open_db()
        self._recover()

    # -- opening and recovery -------------------------------------------------------------

    def _open_db(self) -> sqlite3.Connection:
        path = self.directory / DB_FILE
        try:
            return self._connect(path)
        except sqlite3.DatabaseError as exc:
            aside = self.quarantine_dir / f"{DB_FILE}.corrupt-{int(self.clock.wall())}"
            log.error("outbox index %s is unreadable (%s); moved it to %s and rebuilding the "
                      "index from the spool files", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    path.with_name(path.name + suffix).replace(
                        aside.with_name(aside.name + suffix))
            return self._connect(path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(private_db(path), isolation_level=None, check_same_thread=False,
                             timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(SQLITE_CACHE)
            db.execute(_SCHEMA)
            db.execute("SELECT count(*) FROM entries").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _recover(self) -> None:
        """Finish interrupted removals, drop torn temp files, adopt orphans, flag lost files."""
        with self._lock:
            for (entry_id,) in self._db.execute(
                    "SELECT id FROM entries WHERE gone IS NOT NULL").fetchall():
                self._finish_removal(entry_id)
            for tmp in self.spool.glob(".*.clip.tmp-*"):
                tmp.unlink(missing_ok=True)
            known = {r[0] for r in self._db.execute("SELECT id FROM entries")}
            for path in sorted(self.spool.glob("*.clip")):
                if ENTRY_ID.fullmatch(path.stem) and path.stem not in known:
                    self._adopt(path)
            for entry in self.pending():
                if not self._spool_path(entry.id).exists():
                    self._quarantine(entry, "its spool file is missing")

    def _adopt(self, path: Path) -> None:
        try:
            head, body = unpack(path.read_bytes())
            entry_id = str(head["id"])
            if entry_id != path.stem:
                raise BundleError(f"head names clip {entry_id}")
            if hashlib.sha256(body).hexdigest() != head["sha256"]:
                raise BundleError("payload does not match its sha256")
            self._insert(entry_id, float(head["created"]), path.stat().st_size, len(body),
                         str(head["sha256"]), str(head["content_type"]), head["meta"])
            log.info("outbox: re-queued clip %s found in the spool after a restart", entry_id)
        except (BundleError, KeyError, TypeError, ValueError, OSError) as exc:
            self._move_to_quarantine(path, path.stem, str(exc))

    # -- queueing -------------------------------------------------------------------------

    def _spool_path(self, entry_id: str) -> Path:
        return self.spool / f"{entry_id}.clip"

    def put(self, entry_id: str, payload: bytes, content_type: str,
            meta: dict[str, Any]) -> Entry:
        """Take a clip durably (fsynced file and row) and return; never touches the network."""
        if not ENTRY_ID.fullmatch(entry_id):
            raise ValueError(f"clip id {entry_id!r} is not a safe file name")
        created = self.clock.wall()
        sha = hashlib.sha256(payload).hexdigest()
        head = {"id": entry_id, "created": created, "content_type": content_type,
                "sha256": sha, "size": len(payload), "meta": meta}
        data = pack(head, payload)
        with self._lock:
            atomic_write(self._spool_path(entry_id), data)
            try:
                self._insert(entry_id, created, len(data), len(payload), sha, content_type,
                             meta)
                self._enforce_bounds(entry_id)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                # A full disk, like a failed spool write, is an OSError: the dispatcher holds
                # the clip and puts it again (the spool write and the insert are idempotent).
                raise OSError(errno.ENOSPC, f"the outbox index cannot grow: {exc}") from exc
        return Entry(entry_id, created, len(data), len(payload), sha, content_type, meta, 0, 0.0)

    def _insert(self, entry_id: str, created: float, size: int, payload_size: int, sha: str,
                content_type: str, meta: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO entries (id, created, size, payload_size, sha256, "
            "content_type, meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry_id, created, size, payload_size, sha, content_type, json.dumps(meta)))

    def _enforce_bounds(self, newest: str) -> None:
        while True:
            count, total = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM entries WHERE gone IS NULL"
            ).fetchone()
            if count <= 1 or (count <= self.max_clips and total <= self.max_bytes):
                return
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE gone IS NULL AND id != ? "
                "ORDER BY created, rowid LIMIT 1", (newest,)).fetchone()
            oldest = _entry(row)
            self._remove(oldest.id, "dropped")
            self.dropped += 1
            log.warning("outbox full (%d clips, %.1f MB; bounds %d clips, %.1f MB): dropped the "
                        "oldest clip %s (%d dropped so far)", count, total / 1e6, self.max_clips,
                        self.max_bytes / 1e6, oldest.id, self.dropped)
            self._note(oldest, "dropped", "outbox full")

    # -- the uploader's side --------------------------------------------------------------

    def due(self, now: float) -> Entry | None:
        """The oldest entry whose retry time has come, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE gone IS NULL AND next_try <= ? "
                "ORDER BY created, rowid LIMIT 1", (now,)).fetchone()
        return _entry(row) if row else None

    def next_due(self) -> float | None:
        """When the earliest entry may be tried, or None when the outbox is empty."""
        with self._lock:
            (t,) = self._db.execute(
                "SELECT min(next_try) FROM entries WHERE gone IS NULL").fetchone()
        return t

    def read(self, entry: Entry) -> bytes:
        """The entry's payload, checked against its sha256; quarantines what fails the check."""
        with self._lock:
            if not self._exists(entry.id):
                raise EntryGone(entry.id)
            try:
                head, body = unpack(self._spool_path(entry.id).read_bytes())
                if head.get("id") != entry.id:
                    raise BundleError(f"spool file names clip {head.get('id')}")
                if hashlib.sha256(body).hexdigest() != entry.sha256:
                    raise BundleError("payload does not match its sha256")
            except FileNotFoundError:
                self._quarantine(entry, "its spool file is missing")
                raise CorruptEntry(entry.id) from None
            except (BundleError, OSError) as exc:
                self._quarantine(entry, str(exc))
                raise CorruptEntry(entry.id) from None
            return body

    def ack(self, entry_id: str) -> None:
        """The destination acknowledged the clip: remove it for good."""
        with self._lock:
            self._remove(entry_id, "delivered")

    def retry_later(self, entry_id: str, next_try: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE entries SET attempts = attempts + 1, next_try = ?, last_error = ? "
                "WHERE id = ? AND gone IS NULL", (next_try, error, entry_id))

    def expire(self, cutoff: float) -> int:
        """Remove entries created before ``cutoff`` (retention); return how many."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE gone IS NULL AND created < ?",
                (cutoff,)).fetchall()
            for row in rows:
                e = _entry(row)
                self._remove(e.id, "expired")
                self._note(e, "expired", "older than upload.retention_days")
            self.expired += len(rows)
        if rows:
            log.info("outbox: %d queued clip(s) expired (retention)", len(rows))
        return len(rows)

    # -- inspection -----------------------------------------------------------------------

    def pending(self) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE gone IS NULL ORDER BY created, rowid"
            ).fetchall()
        return [_entry(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT count(*) FROM entries WHERE gone IS NULL").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- removal --------------------------------------------------------------------------

    def _exists(self, entry_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM entries WHERE id = ? AND gone IS NULL",
                                (entry_id,)).fetchone() is not None

    def _remove(self, entry_id: str, why: str) -> None:
        self._db.execute("UPDATE entries SET gone = ? WHERE id = ?", (why, entry_id))
        self._finish_removal(entry_id)

    def _finish_removal(self, entry_id: str) -> None:
        self._spool_path(entry_id).unlink(missing_ok=True)
        fsync_dir(self.spool)
        self._db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))

    def _quarantine(self, entry: Entry, reason: str) -> None:
        self._db.execute("UPDATE entries SET gone = 'quarantined' WHERE id = ?", (entry.id,))
        path = self._spool_path(entry.id)
        if path.exists():
            self._move_to_quarantine(path, entry.id, reason, note=False)
        else:
            self.quarantined += 1
            log.error("outbox: clip %s quarantined: %s", entry.id, reason)
        self._db.execute("DELETE FROM entries WHERE id = ?", (entry.id,))
        self._note(entry, "quarantined", reason)

    def _move_to_quarantine(self, path: Path, entry_id: str, reason: str,
                            note: bool = True) -> None:
        target = self.quarantine_dir / path.name
        n = 1
        while target.exists():
            target = self.quarantine_dir / f"{path.name}.{n}"
            n += 1
        path.replace(target)
        fsync_dir(self.spool)
        self.quarantined += 1
        log.error("outbox: clip %s is unreadable (%s); moved to %s for inspection; the queue "
                  "goes on", entry_id, reason, target)
        if note and self.ledger is not None:
            self.ledger.append(clip=entry_id, result="quarantined", error=reason)

    def _note(self, entry: Entry, result: str, why: str) -> None:
        if self.ledger is None:
            return
        error, note = (why, "") if result == "quarantined" else ("", why)
        self.ledger.append(clip=entry.id, result=result, bytes=entry.payload_size,
                           sha256=entry.sha256, error=error, note=note)


def _entry(row: tuple[Any, ...]) -> Entry:
    entry_id, created, size, payload_size, sha, ct, meta, attempts, next_try = row
    return Entry(entry_id, created, size, payload_size, sha, ct, json.loads(meta), attempts,
                 next_try)


def queued_count(directory: Path) -> int:
    """Clips waiting in the outbox at ``directory``, read without changing anything."""
    path = directory / DB_FILE
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            (n,) = db.execute("SELECT count(*) FROM entries WHERE gone IS NULL").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return -1
    return int(n)
