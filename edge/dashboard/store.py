"""The dashboard's SQLite history: devices, their activations, and the labels sent.

One writer (the ingest thread) commits a batch of messages per transaction; the web
app reads through its own connection (WAL lets both run at once).

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
    last_seen REAL NOT NULL
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
    def touch(c: sqlite3.Connection, device: str, now: float) -> None:
        c.execute("INSERT INTO devices (id, first_seen, last_seen) VALUES (?, ?, ?) "
                  "ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                  (device, now, now))

    @staticmethod
    def set_status(c: sqlite3.Connection, device: str, online: bool, now: float) -> bool:
        """True when it changed."""
        row = c.execute("SELECT online FROM devices WHERE id = ?", (device,)).fetchone()
        changed = row is None or bool(row[0]) != online
        FleetStore.touch(c, device, now)
        c.execute("UPDATE devices SET online = ?, status_time = ? WHERE id = ?",
                  (int(online), now, device))
        if changed:
            c.execute("INSERT INTO status_history (device, wall_time, what) VALUES (?, ?, ?)",
                      (device, now, "online" if online else "offline"))
        return changed

    @staticmethod
    def set_state(c: sqlite3.Connection, device: str, state: dict[str, Any],
                  now: float) -> None:
        FleetStore.touch(c, device, now)
        old = c.execute("SELECT state FROM devices WHERE id = ?", (device,)).fetchone()
        old_mode = json.loads(old[0])["mode"] if old and old[0] else None
        c.execute("UPDATE devices SET state = ?, state_time = ? WHERE id = ?",
                  (json.dumps(state), now, device))
        if old_mode != state["mode"]:
            c.execute("INSERT INTO status_history (device, wall_time, what) VALUES (?, ?, ?)",
                      (device, now, state["mode"]))

    @staticmethod
    def add_activation(c: sqlite3.Connection, device: str, a: dict[str, Any],
                       now: float) -> bool:
        """True when it is new (a re-delivered event is stored once)."""
        FleetStore.touch(c, device, now)
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

    def devices(self) -> list[dict[str, Any]]:
        return [device_view(r) for r in self._rows("SELECT * FROM devices ORDER BY id")]

    def device(self, device: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM devices WHERE id = ?", (device,))
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

    def totals(self, now: float, window_s: float = 86400.0) -> dict[str, Any]:
        with self._lock:
            devices, online = self.conn.execute(
                "SELECT count(*), coalesce(sum(online), 0) FROM devices").fetchone()
            modes = dict(self.conn.execute(
                "SELECT json_extract(state, '$.mode'), count(*) FROM devices "
                "WHERE online = 1 AND state IS NOT NULL GROUP BY 1").fetchall())
            acts, false = self.conn.execute(
                f"SELECT count(*), coalesce(sum({FALSE_SQL}), 0) FROM activations "
                "WHERE wall_time >= ?", (now - window_s,)).fetchone()
        hours = window_s / 3600.0
        return {"devices": devices, "online": online, "offline": devices - online,
                "listening": modes.get("listening", 0), "recording": modes.get("recording", 0),
                "muted": modes.get("muted", 0), "error": modes.get("error", 0),
                "activations": acts, "false": false, "window_h": hours,
                "false_per_device_hour": round(false / (max(online, 1) * hours), 4)}

    def false_per_hour(self, now: float, hours: int = 24, top: int = 8) -> dict[str, Any]:
        """False activations per hour per device, for the ``top`` devices with the most,
        and the fleet's mean per device; hour buckets are epoch hours."""
        start_h = int(now // 3600) - hours + 1
        with self._lock:
            rows = self.conn.execute(
                f"SELECT device, CAST(wall_time / 3600 AS INTEGER) AS h, count(*) "
                f"FROM activations WHERE wall_time >= ? AND {FALSE_SQL} GROUP BY device, h",
                (start_h * 3600.0,)).fetchall()
            n_devices = self.conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        per: dict[str, dict[int, int]] = {}
        fleet: dict[int, int] = {}
        for device, h, n in rows:
            per.setdefault(device, {})[h] = n
            fleet[h] = fleet.get(h, 0) + n
        ranked = sorted(per, key=lambda d: (-sum(per[d].values()), d))[:top]
        hours_list = list(range(start_h, start_h + hours))
        return {
            "hours": [h * 3600 for h in hours_list],
            "series": [{"device": d, "values": [per[d].get(h, 0) for h in hours_list]}
                       for d in ranked],
            "fleet_mean": [round(fleet.get(h, 0) / max(n_devices, 1), 4) for h in hours_list],
        }


def device_view(r: dict[str, Any]) -> dict[str, Any]:
    state = json.loads(r["state"]) if r.get("state") else None
    return {"id": r["id"], "online": bool(r["online"]), "state": state,
            "state_time": r["state_time"], "last_seen": r["last_seen"]}


def activation_view(r: dict[str, Any]) -> dict[str, Any]:
    return {"device": r["device"], "id": r["id"], "wall_time": r["wall_time"],
            "model": r["model"], "score": r["score"], "threshold": r["threshold"],
            "reason": r["reason"], "duration_s": r["duration_s"],
            "likely_false": bool(r["likely_false"]), "kept": bool(r["kept"]),
            "label": r["label"], "label_status": r.get("label_status")}
