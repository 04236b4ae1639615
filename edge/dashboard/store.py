"""The dashboard's SQLite history: devices, their activations, and the labels sent.

One writer (the ingest thread) commits a batch of messages per transaction; the web
app reads through its own connection (WAL lets both run at once).

The live view is every device online, and every offline device last heard of less than
``offline_after_s`` ago (``live_since``); the others have aged out of it but keep their
history. A simulated device (its state says ``"simulated": true``) can be removed with
its history; the removal is remembered, so the broker's retained messages of it, replayed
when the dashboard reconnects, do not bring it back (anything it sends later does).

>>> store = FleetStore.open(Path("fleet.sqlite3"))        # doctest: +SKIP
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.files import private_db
from edge.pipeline.outcome import FALSE_SQL  # the same rule as the device's own `edge stats`

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    online INTEGER NOT NULL DEFAULT 0,
    status_time REAL,
    state TEXT,
    state_time REAL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    name TEXT,
    simulated INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS removed (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS activations (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    wall_time REAL NOT NULL,
    model TEXT NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    reason TEXT NOT NULL,
    duration_s REAL NOT NULL,
    likely_false INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT 'unknown',
    label_time REAL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
);
CREATE INDEX IF NOT EXISTS activations_time ON activations(wall_time);
CREATE INDEX IF NOT EXISTS activations_device_time ON activations(device, wall_time);
CREATE TABLE IF NOT EXISTS labels (
    tx TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    activation TEXT NOT NULL,
    label TEXT NOT NULL,
    sent REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'sent',
    answered REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS status_history (
    n INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    wall_time REAL NOT NULL,
    what TEXT NOT NULL
);
"""
_ADDED_COLUMNS = {"devices": (("name", "TEXT"), ("simulated", "INTEGER NOT NULL DEFAULT 0"))}
"""Columns a history written by an older dashboard lacks: added when it is opened."""
LIVE_SQL = "(online = 1 OR last_seen >= ?)"
"""A device in the live view (see the module's docstring), given the cut-off time."""
CHART_MAX = 8
"""Devices one chart draws at most (its colours); the page says which and lets you pick."""


class FleetStoreError(EdgeError):
    """The dashboard's database cannot be opened or written."""


class FleetStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path) -> FleetStore:
        try:
            conn = sqlite3.connect(private_db(path), isolation_level=None,
                                   check_same_thread=False, timeout=5.0)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # a lost second of history is fine
            conn.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        except (OSError, sqlite3.Error) as exc:
            raise FleetStoreError(f"cannot use the dashboard database {path} ({exc}); give "
                                  "--db a writable file, or move a damaged one aside") from None
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def batch(self) -> Iterator[sqlite3.Connection]:
        """One transaction for a batch of writes."""
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # ---- writes (inside ``batch``) ----------------------------------------------------

    @staticmethod
    def touch(c: sqlite3.Connection, device: str, now: float,
              seen: float | None = None) -> None:
        """Know of ``device``; ``seen``: when it was last heard of alive, by this message
        (``now`` unless given: a retained message replayed by the broker says little, 0 or
        its own time)."""
        c.execute("INSERT INTO devices (id, first_seen, last_seen) VALUES (?, ?, ?) "
                  "ON CONFLICT(id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
                  (device, now, now if seen is None else seen))

    @staticmethod
    def set_status(c: sqlite3.Connection, device: str, online: bool, now: float,
                   seen: float) -> bool:
        """True when it changed."""
        row = c.execute("SELECT online FROM devices WHERE id = ?", (device,)).fetchone()
        changed = row is None or bool(row[0]) != online
        FleetStore.touch(c, device, now, seen)
        c.execute("UPDATE devices SET online = ?, status_time = ? WHERE id = ?",
                  (int(online), now, device))
        if changed:
            c.execute("INSERT INTO status_history (device, wall_time, what) VALUES (?, ?, ?)",
                      (device, now, "online" if online else "offline"))
        return changed

    @staticmethod
    def set_state(c: sqlite3.Connection, device: str, state: dict[str, Any],
                  now: float, seen: float) -> None:
        FleetStore.touch(c, device, now, seen)
        old = c.execute("SELECT state FROM devices WHERE id = ?", (device,)).fetchone()
        old_mode = json.loads(old[0])["mode"] if old and old[0] else None
        c.execute("UPDATE devices SET state = ?, state_time = ?, name = ?, simulated = ? "
                  "WHERE id = ?", (json.dumps(state), now, state.get("name") or None,
                                   int(bool(state.get("simulated"))), device))
        if old_mode != state["mode"]:
            c.execute("INSERT INTO status_history (device, wall_time, what) VALUES (?, ?, ?)",
                      (device, now, state["mode"]))

    @staticmethod
    def add_activation(c: sqlite3.Connection, device: str, a: dict[str, Any],
                       now: float) -> bool:
        """True when it is new (a re-delivered event is stored once)."""
        FleetStore.touch(c, device, now, now)
        cur = c.execute(
            "INSERT OR IGNORE INTO activations (device, id, wall_time, model, score, threshold, "
            "reason, duration_s, likely_false, kept, received) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device, a["id"], a["wall_time"], a["model"], a["score"], a["threshold"],
             a["reason"], a["duration_s"], int(a["likely_false"]), int(a["kept"]), now))
        return cur.rowcount > 0

    @staticmethod
    def apply_label(c: sqlite3.Connection, device: str, activation: str, label: str,
                    now: float) -> bool:
        cur = c.execute("UPDATE activations SET label = ?, label_time = ? "
                        "WHERE device = ? AND id = ?", (label, now, device, activation))
        return cur.rowcount > 0

    @staticmethod
    def label_answered(c: sqlite3.Connection, tx: str, ok: bool, error: str | None,
                       now: float) -> tuple[str, str, str] | None:
        """Our label command was answered; (device, activation, label) if it was ours."""
        row = c.execute("SELECT device, activation, label FROM labels WHERE tx = ?",
                        (tx,)).fetchone()
        if row is None:
            return None
        c.execute("UPDATE labels SET status = ?, answered = ?, error = ? WHERE tx = ?",
                  ("ok" if ok else "error", now, error, tx))
        return str(row[0]), str(row[1]), str(row[2])

    @staticmethod
    def removed_at(c: sqlite3.Connection, device: str) -> float | None:
        """When ``device`` was removed, if it was and has not spoken since."""
        row = c.execute("SELECT at FROM removed WHERE id = ?", (device,)).fetchone()
        return None if row is None else float(row[0])

    @staticmethod
    def forget_removal(c: sqlite3.Connection, device: str) -> None:
        c.execute("DELETE FROM removed WHERE id = ?", (device,))

    def remove(self, devices: list[str], now: float) -> None:
        """Delete these devices and their whole history, and remember that they were
        removed (see the module's docstring)."""
        with self.batch() as c:
            for d in devices:
                for table, key in (("activations", "device"), ("labels", "device"),
                                   ("status_history", "device"), ("devices", "id")):
                    c.execute(f"DELETE FROM {table} WHERE {key} = ?", (d,))
                c.execute("INSERT OR REPLACE INTO removed (id, at) VALUES (?, ?)", (d, now))

    def label_sent(self, tx: str, device: str, activation: str, label: str,
                   now: float) -> None:
        with self.batch() as c:
            c.execute("INSERT INTO labels (tx, device, activation, label, sent) "
                      "VALUES (?, ?, ?, ?, ?)", (tx, device, activation, label, now))

    # ---- reads ------------------------------------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def devices(self, live_since: float | None = None) -> list[dict[str, Any]]:
        """Every device, or with ``live_since`` the live view: those online, or offline
        but last heard of at or after ``live_since``."""
        if live_since is None:
            return [device_view(r) for r in self._rows("SELECT * FROM devices ORDER BY id")]
        return [device_view(r) for r in self._rows(
            f"SELECT * FROM devices WHERE {LIVE_SQL} ORDER BY id", (live_since,))]

    def aged_out(self, since: float, until: float) -> list[str]:
        """The offline devices last heard of in [since, until): those that left the live
        view as its cut-off moved from ``since`` to ``until``."""
        return [r["id"] for r in self._rows(
            "SELECT id FROM devices WHERE online = 0 AND last_seen >= ? AND last_seen < ?",
            (since, until))]

    def device(self, device: str, live_since: float | None = None) -> dict[str, Any] | None:
        """The device, or None; with ``live_since``, None too when it is not in the live
        view."""
        since = float("-inf") if live_since is None else live_since
        rows = self._rows(f"SELECT * FROM devices WHERE id = ? AND {LIVE_SQL}",
                          (device, since))
        return device_view(rows[0]) if rows else None

    def activations(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT a.*, (SELECT l.status FROM labels l WHERE l.device = a.device AND "
            "l.activation = a.id ORDER BY l.sent DESC LIMIT 1) AS label_status "
            "FROM activations a WHERE device = ? ORDER BY wall_time DESC LIMIT ?",
            (device, int(limit)))
        return [activation_view(r) for r in rows]

    def activation(self, device: str, activation: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM activations WHERE device = ? AND id = ?",
                          (device, activation))
        return activation_view(rows[0]) if rows else None

    def label_status(self, tx: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM labels WHERE tx = ?", (tx,))
        return rows[0] if rows else None

    def totals(self, now: float, window_s: float = 86400.0,
               live_since: float | None = None) -> dict[str, Any]:
        """Counts of the live view (every device without ``live_since``); ``aged_out``
        counts the devices kept in the history but no longer shown."""
        since = float("-inf") if live_since is None else live_since
        with self._lock:
            devices, online, all_devices = self.conn.execute(
                f"SELECT coalesce(sum({LIVE_SQL}), 0), coalesce(sum(online), 0), count(*) "
                "FROM devices", (since,)).fetchone()
            modes = dict(self.conn.execute(
                "SELECT json_extract(state, '$.mode'), count(*) FROM devices "
                "WHERE online = 1 AND state IS NOT NULL GROUP BY 1").fetchall())
            acts, false = self.conn.execute(
                f"SELECT count(*), coalesce(sum({FALSE_SQL}), 0) FROM activations "
                "WHERE wall_time >= ?", (now - window_s,)).fetchone()
        hours = window_s / 3600.0
        return {"devices": devices, "online": online, "offline": devices - online,
                "aged_out": all_devices - devices,
                "listening": modes.get("listening", 0), "recording": modes.get("recording", 0),
                "muted": modes.get("muted", 0), "error": modes.get("error", 0),
                "activations": acts, "false": false, "window_h": hours,
                "false_per_device_hour": round(false / (max(online, 1) * hours), 4)}

    def false_per_hour(self, now: float, hours: int = 24,
                       picked: list[str] | None = None) -> dict[str, Any]:
        """False activations per hour per device, and the fleet's mean per device; hour
        buckets are epoch hours. The devices drawn are ``picked``, or else the
        ``CHART_MAX`` with the most false wakes; ``shown`` says which, and ``choices``
        lists every device known (most false wakes first) to pick from."""
        start_h = int(now // 3600) - hours + 1
        with self._lock:
            rows = self.conn.execute(
                f"SELECT device, CAST(wall_time / 3600 AS INTEGER) AS h, count(*) "
                f"FROM activations WHERE wall_time >= ? AND {FALSE_SQL} GROUP BY device, h",
                (start_h * 3600.0,)).fetchall()
            names = dict(self.conn.execute("SELECT id, name FROM devices").fetchall())
        per: dict[str, dict[int, int]] = {}
        fleet: dict[int, int] = {}
        for device, h, n in rows:
            per.setdefault(device, {})[h] = n
            fleet[h] = fleet.get(h, 0) + n
        total = {d: sum(per.get(d, {}).values()) for d in names}
        ranked = sorted(names, key=lambda d: (-total[d], d))
        drawn = ranked[:CHART_MAX] if picked is None else [d for d in picked if d in names]
        if picked is None:
            drawn = [d for d in drawn if total[d] > 0]
        hours_list = list(range(start_h, start_h + hours))
        return {
            "hours": [h * 3600 for h in hours_list],
            "shown": "top" if picked is None else "picked",
            "top": CHART_MAX,
            "with_false": sum(1 for d in names if total[d] > 0),
            "series": [{"device": d, "name": names[d],
                        "values": [per.get(d, {}).get(h, 0) for h in hours_list]}
                       for d in drawn],
            "fleet_mean": [round(fleet.get(h, 0) / max(len(names), 1), 4)
                           for h in hours_list],
            "choices": [{"device": d, "name": names[d], "false": total[d]} for d in ranked],
        }


def device_view(r: dict[str, Any]) -> dict[str, Any]:
    state = json.loads(r["state"]) if r.get("state") else None
    return {"id": r["id"], "name": r.get("name") or None,
            "simulated": bool(r.get("simulated")), "online": bool(r["online"]),
            "state": state, "state_time": r["state_time"], "last_seen": r["last_seen"]}


def activation_view(r: dict[str, Any]) -> dict[str, Any]:
    return {"device": r["device"], "id": r["id"], "wall_time": r["wall_time"],
            "model": r["model"], "score": r["score"], "threshold": r["threshold"],
            "reason": r["reason"], "duration_s": r["duration_s"],
            "likely_false": bool(r["likely_false"]), "kept": bool(r["kept"]),
            "label": r["label"], "label_status": r.get("label_status")}
