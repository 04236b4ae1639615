"""The activation log: one SQLite row per wake, its labels, and the time spent listening.

Every detection that started a recording becomes one row, written once, in one
transaction, when the activation ends. A power cut leaves either the whole row or
none of it. Nothing is written while the device sits idle; see
``edge.activations.plugin`` for when writes happen. The file and its schema are in
``edge.activations.schema``; the rows and periods it holds in ``edge.activations.rows``.

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
from pathlib import Path
from typing import Any

from edge.activations.rows import (
    ACTIVATION_NUMBER,
    ActivationRow,
    Period,
    at_or_now,
    boot_id,
    check_label,
    outcome_for,
    parse_since,
    pid_alive,
)
from edge.activations.schema import (
    LABEL_SOURCES,
    LABELS,
    OUTCOMES,
    ActivationLogError,
    connect,
    fix_for,
)
from edge.clock import iso
from edge.config import Config
from edge.errors import UsageError
from edge.pipeline.outcome import FALSE_SQL
from edge.privacy.places import FALSE_AUDIO_DIR

__all__ = [  # what the log's users import from here, wherever it is defined
    "FALSE_AUDIO_DIR", "LABELS", "LABEL_SOURCES", "OUTCOMES", "ActivationLog",
    "ActivationLogError", "ActivationRow", "Period", "boot_id", "check_label", "db_path",
    "fix_for", "mark_uploaded", "outcome_for", "parse_since", "pid_alive",
]

log = logging.getLogger(__name__)


class ActivationLog:
    """The SQLite store. Thread-safe: one connection, one lock, short transactions."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path, create: bool = True, check: bool = False) -> ActivationLog:
        """Open (or create) the log; a locked or corrupt file raises ``ActivationLogError``."""
        return cls(connect(path, create, check), path)

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
            if outcome != "streamed" and row.clip_id and c.execute(  # streamed says more
                    "SELECT 1 FROM uploads WHERE clip_id = ?", (row.clip_id,)).fetchone():
                outcome = "uploaded"
            cur = c.execute(
                "INSERT INTO activations (id, wall_time, model, threshold, peak_score, "
                "frames_over, clip_id, duration_s, vad_speech_ratio, end_reason, outcome, "
                "likely_false, flags, verifier, verifier_accept, verifier_score, label, "
                "label_source, labelled_at, audio_file, period, streamed_to) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.wall_time, row.model, row.threshold, row.peak_score,
                 row.frames_over, row.clip_id, row.duration_s, row.vad_speech_ratio,
                 row.end_reason, outcome, int(row.likely_false), ",".join(row.flags),
                 row.verifier, None if row.verifier_accept is None else int(row.verifier_accept),
                 row.verifier_score, row.label, row.label_source, row.labelled_at,
                 row.audio_file, row.period, row.streamed_to))
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
            self._apply_label(c, aid, label, source, at_or_now(at))
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
                      (clip_id, at_or_now(at)))
            cur = c.execute("UPDATE activations SET outcome = CASE WHEN outcome IN "
                            "('streamed', 'transcribed') THEN outcome ELSE 'uploaded' END "
                            "WHERE clip_id = ?", (clip_id,))
            return cur.rowcount > 0

    def mark_transcribed(self, activation_id: str, destination: str, chars: int,
                         text: str | None) -> bool:
        """A speech-to-text server transcribed the activation's utterance: outcome
        ``transcribed``, where it went and the transcript's length; its ``text`` only when
        the owner keeps transcripts (None: not kept). True if the activation is logged."""
        with self._tx() as c:
            cur = c.execute("UPDATE activations SET outcome = 'transcribed', streamed_to = ?, "
                            "transcript_chars = ?, transcript = ? WHERE id = ?",
                            (destination, chars, text, activation_id))
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
        number = ACTIVATION_NUMBER.fullmatch(ref) is not None  # ASCII, fits SQLite's INTEGER
        if row is None and number:
            row = c.execute("SELECT id FROM activations WHERE n = ?", (int(ref),)).fetchone()
        if row is None and hexish:
            rows = c.execute("SELECT id FROM activations WHERE id LIKE ? LIMIT 2",
                             (ref.lower() + "%",)).fetchall()
            if len(rows) > 1:
                raise ActivationLogError(f"activation id prefix {ref[:40]!r} matches more than one "
                                         "activation; give more of the id, or its number")
            row = rows[0] if rows else None
        elif row is None and not number:
            raise UsageError(f"{ref[:60]!r} is not an activation number or id; give the "
                             "number or id shown by `edge log`, or 'last'")
        if row is None:
            raise ActivationLogError(f"no activation {ref[:40]} in the log; `edge log` lists the "
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


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def db_path(cfg: Config) -> Path:
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
