"""The activation log's database file: its schema, opening it (creating or upgrading the
schema), and what to tell a person when the file cannot be used.

Readers and writers share one connection, opened here in WAL mode with
``synchronous=FULL``: a commit is on the card before it returns.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from edge.errors import EdgeError
from edge.files import SQLITE_CACHE, private_db

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""2: outcome ``streamed`` and ``streamed_to`` (a turn handed to a voice assistant);
3: outcome ``transcribed``, ``transcript_chars`` and (opt-in) ``transcript`` (an utterance a
speech-to-text server transcribed)."""

OUTCOMES = ("uploaded", "kept", "discarded", "aborted_by_mute", "cancelled_by_user", "no_speech",
            "streamed", "transcribed")
LABELS = ("unknown", "true", "false")
LABEL_SOURCES = ("auto", "button", "cli", "mqtt", "dashboard")
BUSY_TIMEOUT_MS = 3000

_ACTIVATIONS = f"""
CREATE TABLE IF NOT EXISTS {{table}} (
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
    period INTEGER REFERENCES listening_periods(n),
    streamed_to TEXT,
    transcript_chars INTEGER,
    transcript TEXT
);
"""
_V1_COLUMNS = ("n, id, wall_time, model, threshold, peak_score, frames_over, clip_id, "
               "duration_s, vad_speech_ratio, end_reason, outcome, likely_false, flags, "
               "verifier, verifier_accept, verifier_score, label, label_source, labelled_at, "
               "audio_file, period")
_INDEXES = """
CREATE INDEX IF NOT EXISTS activations_time ON activations(wall_time);
CREATE INDEX IF NOT EXISTS activations_clip ON activations(clip_id);
"""
_V2_COLUMNS = _V1_COLUMNS + ", streamed_to"


def _rebuild(columns: str) -> str:
    return f"""
{_ACTIVATIONS.format(table="activations_new")}
INSERT INTO activations_new ({columns}) SELECT {columns} FROM activations;
DROP TABLE activations;
ALTER TABLE activations_new RENAME TO activations;
{_INDEXES}
"""


_UPGRADES = {1: _rebuild(_V1_COLUMNS), 2: _rebuild(_V2_COLUMNS)}
"""From each older version to this one: SQLite cannot change a CHECK, so the table is
rebuilt (foreign keys off, as SQLite's documentation prescribes; the labels still reference
it by name)."""
_SCHEMA = _ACTIVATIONS.format(table="activations") + _INDEXES + f"""
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


def connect(path: Path, create: bool = True, check: bool = False) -> sqlite3.Connection:
    """Open (or create) the log's database, its schema current; a missing (with ``create``
    false), locked or corrupt file raises ``ActivationLogError``."""
    if not create and not path.exists():
        raise ActivationLogError(
            f"there is no activation log at {path} yet; it is created when `edge run` "
            "starts (set [activations] db to use another file)")
    try:
        conn = sqlite3.connect(private_db(path), timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ActivationLogError(fix_for(path, exc)) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(SQLITE_CACHE)
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
        if version in _UPGRADES:
            _upgrade(conn, version)
        elif version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\n"
                               f"PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
    except ActivationLogError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise ActivationLogError(fix_for(path, exc)) from None
    return conn


def _upgrade(conn: sqlite3.Connection, version: int) -> None:
    """Rebuild the activations table (``_UPGRADES``) once, whoever opens the file first."""
    conn.execute("PRAGMA foreign_keys = OFF")  # outside the transaction, or it is ignored
    try:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("PRAGMA user_version").fetchone()[0] == version:  # not upgraded meanwhile
            for statement in _UPGRADES[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


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
