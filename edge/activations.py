"""The activation log: one SQLite row per wake, its labels, and the time spent listening.

Every detection that started a recording becomes one row, written once, in one
transaction, when the activation ends. The database is in WAL mode with
``synchronous=FULL``: a commit is on the card before ``record`` returns, and a
power cut leaves either the whole row or none of it. Nothing is written while
the device sits idle; see ``edge.activation_plugin`` for when writes happen.

>>> log = ActivationLog.open(Path("activations.sqlite3"))   # doctest: +SKIP
>>> n = log.record(row)                              # doctest: +SKIP
>>> log.label(str(n), "false", "cli")                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, UsageError
from edge.places import FALSE_AUDIO_DIR as FALSE_AUDIO_DIR  # written by the log

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

OUTCOMES = ("uploaded", "kept", "discarded", "aborted_by_mute", "cancelled_by_user", "no_speech")
LABELS = ("unknown", "true", "false")
LABEL_SOURCES = ("auto", "button", "cli", "mqtt", "dashboard")
BUSY_TIMEOUT_MS = 3000

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS activations (
    n INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    wall_time REAL NOT NULL,
    model TEXT NOT NULL,
    threshold REAL NOT NULL,
    peak_score REAL NOT NULL,
    frames_over INTEGER NOT NULL,
    clip_id TEXT,
    duration_s REAL NOT NULL,
    vad_speech_ratio REAL NOT NULL,
    end_reason TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES!r}),
    likely_false INTEGER NOT NULL CHECK (likely_false IN (0, 1)),
    flags TEXT NOT NULL DEFAULT '',
    verifier TEXT,
    verifier_accept INTEGER CHECK (verifier_accept IN (0, 1)),
    verifier_score REAL,
    label TEXT NOT NULL DEFAULT 'unknown' CHECK (label IN {LABELS!r}),
    label_source TEXT NOT NULL DEFAULT 'auto' CHECK (label_source IN {LABEL_SOURCES!r}),
    labelled_at REAL,
    audio_file TEXT,
    period INTEGER REFERENCES listening_periods(n)
);
CREATE INDEX IF NOT EXISTS activations_time ON activations(wall_time);
CREATE INDEX IF NOT EXISTS activations_clip ON activations(clip_id);
CREATE TABLE IF NOT EXISTS labels (
    n INTEGER PRIMARY KEY,
    activation_id TEXT NOT NULL REFERENCES activations(id),
    label TEXT NOT NULL CHECK (label IN {LABELS!r}),
    source TEXT NOT NULL CHECK (source IN {LABEL_SOURCES!r}),
    wall_time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_activation ON labels(activation_id);
CREATE TABLE IF NOT EXISTS listening_periods (
    n INTEGER PRIMARY KEY,
    start_wall REAL NOT NULL,
    end_wall REAL,
    heard_s REAL NOT NULL DEFAULT 0,
    checkpoint_wall REAL NOT NULL,
    end_reason TEXT,
    models TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    clip_id TEXT PRIMARY KEY,
    wall_time REAL NOT NULL
);
"""


class ActivationLogError(EdgeError):
    """The activation log is missing, locked, corrupt or was asked about something it lacks."""


@dataclass(frozen=True)
class ActivationRow:
    """One activation, as written when it ended."""

    id: str
    wall_time: float
    """Wall-clock time of the detection (UTC epoch seconds)."""
    model: str
    threshold: float
    peak_score: float
    """Highest score over the run of frames at or over the threshold that triggered."""
    frames_over: int
    """Length of that run, in 80 ms frames."""
    clip_id: str | None
    duration_s: float
    """Recording length: the pre-roll plus what followed, or what was heard before an abort."""
    vad_speech_ratio: float
    end_reason: str
    """How the recording ended: silence, no_speech, max_length, shutdown, end_of_stream, ..."""
    outcome: str
    likely_false: bool
    flags: tuple[str, ...] = ()
    """Why it is flagged likely-false: no_speech, cancelled_by_user, aborted_by_mute, verifier."""
    verifier: str | None = None
    verifier_accept: bool | None = None
    verifier_score: float | None = None
    audio_file: str | None = None
    period: int | None = None
    period_heard_s: float = 0.0
    """Listening time of its period at the detection: the row checkpoints the period."""
    label: str = "unknown"
    label_source: str = "auto"
    labelled_at: float | None = None


def outcome_for(reason: str, clip_id: str | None, sinks_keep: bool = True) -> str:
    """The outcome recorded when an activation ends (``uploaded`` comes later).

    ``sinks_keep``: whether the clip sinks keep a clip (false when the only sink
    discards it: upload off and no local copy).
    """
    if reason in ("aborted_by_mute", "cancelled_by_user"):
        return reason
    if clip_id is not None:
        return "kept" if sinks_keep else "discarded"
    return "no_speech" if reason == "no_speech" else "discarded"


@dataclass(frozen=True)
class Period:
    """A stretch of time spent running and unmuted."""

    n: int
    start_wall: float
    end_wall: float | None
    heard_s: float
    """Seconds of audio actually heard (80 ms frames fed while unmuted)."""
    checkpoint_wall: float
    end_reason: str | None
    models: dict[str, float] = field(default_factory=dict)
    """The models listened for, each with its threshold."""
    boot_id: str = ""
    pid: int = 0


def boot_id() -> str:
    """This boot's id, so a dead daemon's open period is told from a running one's."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fix_for(path: Path, exc: BaseException) -> str:
    """A one-line description of a database failure and what a person can do about it."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the activation log {path} is locked by another program ({text}); close the "
                "program holding it (an open sqlite3 shell, a backup tool) and try again")
    corrupt = type(exc) is sqlite3.DatabaseError  # what SQLite raises for a damaged file
    if corrupt or any(w in text for w in ("malformed", "not a database", "corrupt")):
        return (f"the activation log {path} is corrupt ({text}); move it aside "
                f"(mv {path} {path}.bad) and a fresh log starts with the next run; "
                f"`sqlite3 {path}.bad .recover` may save its rows")
    if isinstance(exc, PermissionError) or "readonly" in text or "permission" in text.lower():
        return (f"the activation log {path} cannot be written ({text}); make it and its "
                "directory writable by the user running edge-recorder")
    return f"the activation log {path} cannot be used ({text})"


class ActivationLog:
    """The SQLite store. Thread-safe: one connection, one lock, short transactions."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path, create: bool = True, check: bool = False) -> ActivationLog:
        """Open (or create) the log; a locked or corrupt file raises ``ActivationLogError``."""
        if not create and not path.exists():
            raise ActivationLogError(
                f"there is no activation log at {path} yet; it is created when `edge run` "
                "starts (set [activations] db to use another file)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists()
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ActivationLogError(fix_for(path, exc)) from None
        try:
            if fresh:
                os.chmod(path, 0o600)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warning("activation log %s is in %s mode, not WAL", path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if check:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {result}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ActivationLogError(
                    f"the activation log {path} has schema {version}, newer than this "
                    f"edge-recorder understands ({SCHEMA_VERSION}); upgrade edge-recorder")
            if version < SCHEMA_VERSION:
                conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\n"
                                   f"PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
        except ActivationLogError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise ActivationLogError(fix_for(path, exc)) from None
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ActivationLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _transaction(self._conn):
            yield self._conn

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """For what a person asked for: a database failure becomes a one-line error."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ActivationLogError(fix_for(self.path, exc)) from exc

    # ---- writes -----------------------------------------------------------

    def record(self, row: ActivationRow, labels: Sequence[tuple[str, str, float]] = ()
               ) -> int:
        """Write one activation (and any labels that came while it was in flight); its number.

        Writing the same activation twice is a no-op, so a retried write is harmless.
        """
        with self._tx() as c:
            found = c.execute("SELECT n FROM activations WHERE id = ?", (row.id,)).fetchone()
            if found:
                return int(found[0])
            outcome = row.outcome
            if row.clip_id and c.execute("SELECT 1 FROM uploads WHERE clip_id = ?",
                                         (row.clip_id,)).fetchone():
                outcome = "uploaded"
            cur = c.execute(
                "INSERT INTO activations (id, wall_time, model, threshold, peak_score, "
                "frames_over, clip_id, duration_s, vad_speech_ratio, end_reason, outcome, "
                "likely_false, flags, verifier, verifier_accept, verifier_score, label, "
                "label_source, labelled_at, audio_file, period) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.wall_time, row.model, row.threshold, row.peak_score,
                 row.frames_over, row.clip_id, row.duration_s, row.vad_speech_ratio,
                 row.end_reason, outcome, int(row.likely_false), ",".join(row.flags),
                 row.verifier, None if row.verifier_accept is None else int(row.verifier_accept),
                 row.verifier_score, row.label, row.label_source, row.labelled_at,
                 row.audio_file, row.period))
            n = int(cur.lastrowid or 0)
            if row.label != "unknown":
                c.execute("INSERT INTO labels (activation_id, label, source, wall_time) "
                          "VALUES (?, ?, ?, ?)",
                          (row.id, row.label, row.label_source, row.labelled_at or row.wall_time))
            for label, source, at in labels:
                self._apply_label(c, row.id, label, source, at)
            if row.period is not None:
                # the activation doubles as a checkpoint of the period it happened in
                c.execute("UPDATE listening_periods SET heard_s = MAX(heard_s, ?), "
                          "checkpoint_wall = MAX(checkpoint_wall, ?) "
                          "WHERE n = ? AND end_wall IS NULL",
                          (row.period_heard_s, row.wall_time, row.period))
            return n

    def label(self, ref: str, label: str, source: str, at: float | None = None) -> str:
        """Label an activation (by number, id, unique id prefix or ``last``); its id.

        The latest label wins; every change is kept in the label history. Repeating
        the current label and source changes nothing.
        """
        check_label(label, source)
        with self._reported(), self._tx() as c:
            aid = self._resolve(c, ref)
            self._apply_label(c, aid, label, source, _now(at))
            return aid

    @staticmethod
    def _apply_label(c: sqlite3.Connection, aid: str, label: str, source: str,
                     at: float) -> None:
        cur = c.execute("SELECT label, label_source FROM activations WHERE id = ?",
                        (aid,)).fetchone()
        if cur is None:
            raise ActivationLogError(f"no activation {aid} in the log")
        if tuple(cur) == (label, source):
            return
        c.execute("UPDATE activations SET label = ?, label_source = ?, labelled_at = ? "
                  "WHERE id = ?", (label, source, at, aid))
        c.execute("INSERT INTO labels (activation_id, label, source, wall_time) "
                  "VALUES (?, ?, ?, ?)", (aid, label, source, at))

    def mark_uploaded(self, clip_id: str, at: float | None = None) -> bool:
        """The destination acknowledged ``clip_id``; True if its activation is already logged.

        If the activation is still in flight, its row is written as ``uploaded``.
        """
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO uploads (clip_id, wall_time) VALUES (?, ?)",
                      (clip_id, _now(at)))
            cur = c.execute("UPDATE activations SET outcome = 'uploaded' WHERE clip_id = ?",
                            (clip_id,))
            return cur.rowcount > 0

    def open_period(self, start_wall: float, models: dict[str, float], heard_s: float = 0.0,
                    end_wall: float | None = None, end_reason: str | None = None) -> int:
        """Start a listening period (or write a whole one, when ``end_wall`` is given)."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO listening_periods (start_wall, end_wall, heard_s, checkpoint_wall, "
                "end_reason, models, boot_id, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (start_wall, end_wall, heard_s, end_wall or start_wall, end_reason,
                 json.dumps(models, sort_keys=True), boot_id(), os.getpid()))
            return int(cur.lastrowid or 0)

    def checkpoint(self, period: int, heard_s: float, wall: float) -> None:
        with self._tx() as c:
            c.execute("UPDATE listening_periods SET heard_s = MAX(heard_s, ?), "
                      "checkpoint_wall = MAX(checkpoint_wall, ?) WHERE n = ? AND end_wall IS NULL",
                      (heard_s, wall, period))

    def close_period(self, period: int, heard_s: float, end_wall: float, reason: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE listening_periods SET heard_s = MAX(heard_s, ?), end_wall = ?, "
                      "checkpoint_wall = MAX(checkpoint_wall, ?), end_reason = ? WHERE n = ?",
                      (heard_s, end_wall, end_wall, reason, period))

    def close_dangling_periods(self) -> int:
        """Close the open periods of daemons that died (power loss, SIGKILL) at their last
        known time: the latest of the period's start, its last activation and its last
        checkpoint. Returns how many were closed."""
        me = boot_id()
        closed = 0
        with self._tx() as c:
            rows = c.execute("SELECT n, checkpoint_wall, boot_id, pid FROM listening_periods "
                             "WHERE end_wall IS NULL").fetchall()
            for n, last, boot, pid in rows:
                if boot == me and me and (pid == os.getpid() or pid_alive(pid)):
                    continue  # a daemon that is still running
                c.execute("UPDATE listening_periods SET end_wall = ?, end_reason = 'unclean_stop' "
                          "WHERE n = ?", (last, n))
                closed += 1
        return closed

    # ---- reads ------------------------------------------------------------

    def _resolve(self, c: sqlite3.Connection, ref: str) -> str:
        ref = ref.strip()
        if ref == "last":
            row = c.execute("SELECT id FROM activations ORDER BY n DESC LIMIT 1").fetchone()
            if row is None:
                raise ActivationLogError("the activation log is empty: nothing to label yet")
            return str(row[0])
        row = c.execute("SELECT id FROM activations WHERE id = ?", (ref,)).fetchone()
        hexish = len(ref) >= 4 and all(ch in "0123456789abcdef-" for ch in ref.lower())
        if row is None and ref.isdigit():
            row = c.execute("SELECT id FROM activations WHERE n = ?", (int(ref),)).fetchone()
        if row is None and hexish:
            rows = c.execute("SELECT id FROM activations WHERE id LIKE ? LIMIT 2",
                             (ref.lower() + "%",)).fetchall()
            if len(rows) > 1:
                raise ActivationLogError(f"activation id prefix {ref!r} matches more than one "
                                         "activation; give more of the id, or its number")
            row = rows[0] if rows else None
        elif row is None and not ref.isdigit():
            raise UsageError(f"{ref!r} is not an activation number or id; give the number or "
                             "id shown by `edge log`, or 'last'")
        if row is None:
            raise ActivationLogError(f"no activation {ref} in the log; `edge log` lists the "
                                     "activations it holds")
        return str(row[0])

    def get(self, ref: str) -> dict[str, Any]:
        with self._lock, self._reported():
            aid = self._resolve(self._conn, ref)
            return self.rows(where="id = ?", params=(aid,))[0]

    def rows(self, since: float | None = None, false_only: bool = False,
             where: str = "", params: Sequence[Any] = (), limit: int | None = None,
             newest_first: bool = False) -> list[dict[str, Any]]:
        """Activations as dicts, oldest first, each with its label history."""
        clauses, args = [], list(params)
        if where:
            clauses.append(where)
        if since is not None:
            clauses.append("wall_time >= ?")
            args.append(since)
        if false_only:
            clauses.append(FALSE_SQL)
        sql = "SELECT * FROM activations"
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        sql += " ORDER BY n DESC" if newest_first else " ORDER BY n"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock, self._reported():
            cur = self._conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            out = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            history: dict[str, list[dict[str, Any]]] = {}
            for aid, label, source, at in self._conn.execute(
                    "SELECT activation_id, label, source, wall_time FROM labels ORDER BY n"):
                history.setdefault(aid, []).append(
                    {"label": label, "source": source, "time": iso(at)})
        for r in out:
            r["likely_false"] = bool(r["likely_false"])
            if r["verifier_accept"] is not None:
                r["verifier_accept"] = bool(r["verifier_accept"])
            r["time"] = iso(r["wall_time"])
            r["labelled_time"] = iso(r["labelled_at"]) if r["labelled_at"] else None
            r["label_history"] = history.get(r["id"], [])
        return out

    def periods(self) -> list[Period]:
        with self._lock, self._reported():
            rows = self._conn.execute(
                "SELECT n, start_wall, end_wall, heard_s, checkpoint_wall, end_reason, models, "
                "boot_id, pid FROM listening_periods ORDER BY n").fetchall()
        return [Period(n, s, e, h, ck, r, json.loads(m), b, p)
                for n, s, e, h, ck, r, m, b, p in rows]

    def integrity(self) -> str:
        with self._lock, self._reported():
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


FALSE_SQL = "label = 'false' OR (label = 'unknown' AND likely_false = 1)"
"""Counted as a false activation: labelled false, or flagged and not labelled either way."""


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_label(label: str, source: str) -> None:
    if label not in ("true", "false"):
        raise UsageError(f"label {label!r} is not allowed; give true (it was meant for the "
                         "device) or false (an accidental wake)")
    if source not in LABEL_SOURCES:
        raise UsageError(f"label source {source!r} is not allowed; use one of "
                         f"{', '.join(LABEL_SOURCES)}")


def _now(at: float | None) -> float:
    return datetime.now(UTC).timestamp() if at is None else at


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: an ISO 8601 date or time (UTC unless it says otherwise), or an age
    such as ``7d``, ``12h`` or ``30m``; epoch seconds."""
    s = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60}
    if len(s) >= 2 and s[-1] in units and s[:-1].replace(".", "", 1).isdigit():
        return _now(now) - float(s[:-1]) * units[s[-1]]
    try:
        when = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date; give YYYY-MM-DD, a time such as "
                         "2024-05-01T13:00Z (UTC unless an offset is given), or an age such "
                         "as 7d, 12h or 30m") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def db_path(cfg: Any) -> Path:
    """Where the activation log of this config lives."""
    return Path(cfg.under_state(cfg.activations.db))


def mark_uploaded(path: Path, clip_id: str) -> bool:
    """For the outbox (any thread or process): the destination acknowledged ``clip_id``.

    Never raises for a log problem: an upload must not fail because the log did.
    """
    try:
        with ActivationLog.open(path) as store:
            return store.mark_uploaded(clip_id)
    except (ActivationLogError, sqlite3.Error) as exc:
        log.warning("could not mark clip %s uploaded: %s", clip_id, exc)
        return False
