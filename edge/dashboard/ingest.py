"""From MQTT messages to the history and the live page.

paho's network thread only ``offer``s each message to a bounded queue. The ingest
thread takes them in batches, checks each against the device's message formats
(``edge.mqtt.messages``), writes a batch in one transaction, and hands one update per
batch to the page. Each message is stored in its own savepoint: a broken message from
another publisher, whatever it breaks, is undone, logged and skipped, and the others of
its batch are kept. The counters are added only once the batch is committed.

A device is last heard of when a message of it arrives live; a retained message the
broker replays (on each reconnect) says only what its own ``wall_time`` says, so a
device long gone stays aged out of the live view (``FleetStore``). A retained message of
a removed device from before its removal is ignored, neither stored nor counted broken.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.dashboard.store import FleetStore
from edge.mqtt.messages import (
    BadMessage,
    check_activation,
    check_state,
    check_status,
    decode_object,
)
from edge.mqtt.topics import parse_topic

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessage

log = logging.getLogger(__name__)

BATCH = 2000
BATCH_WAIT_S = 0.02
TOTALS_EVERY_S = 1.0


@dataclass
class Counters:
    received: int = 0
    stored: int = 0
    skipped: int = 0
    dropped: int = 0
    batches: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool
    t: float


class Ingestor:
    def __init__(self, store: FleetStore, base: str = "edge",
                 notify: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time, max_queue: int = 200_000,
                 live_since: Callable[[float], float | None] = lambda _now: None) -> None:
        self.store = store
        self.live_since = live_since
        """The live view's cut-off at a time (``FleetStore.devices``); None: everything."""
        self.base = base
        self.notify = notify
        self.clock = clock
        self.counters = Counters()
        self._q: queue.Queue[Incoming | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="dashboard-ingest", daemon=True)
        self._last_totals = 0.0
        self._totals_owed = False
        """Totals changed but were held back (at most one a second): sent once it is quiet."""
        self.idle = threading.Event()

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        """Messages received but not yet stored."""
        return self._q.qsize()

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(10.0)

    def offer(self, msg: MQTTMessage) -> None:
        """paho's thread: queue and return."""
        item = Incoming(str(msg.topic), bytes(msg.payload), bool(msg.retain), self.clock())
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.counters.dropped += 1
            if self.counters.dropped in (1, 100) or self.counters.dropped % 10000 == 0:
                log.warning("the dashboard is behind: %d messages dropped",
                            self.counters.dropped)

    # ---- the ingest thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.idle.set()
            try:
                first = self._q.get(timeout=TOTALS_EVERY_S if self._totals_owed else None)
            except queue.Empty:
                self._send_owed_totals()
                continue
            self.idle.clear()
            if first is None:
                return
            items = [first]
            deadline = time.monotonic() + BATCH_WAIT_S
            stop = False
            while len(items) < BATCH:
                try:
                    nxt = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            try:
                self.ingest(items)
            except Exception:
                log.exception("the dashboard could not store a batch of %d messages",
                              len(items))
            if stop:
                return

    def ingest(self, items: list[Incoming]) -> dict[str, Any]:
        """Store a batch; return (and pass to ``notify``) what the page must update."""
        now = self.clock()
        changed: dict[str, None] = {}
        activations: list[dict[str, Any]] = []
        labels: list[dict[str, Any]] = []
        stored = 0
        skipped: list[tuple[str, str]] = []
        try:
            with self.store.batch() as c:
                for it in items:
                    if self._checked(c, it, now, changed, activations, labels, skipped):
                        stored += 1
        except Exception as exc:
            # The batch itself was not committed: nothing of it is stored, and the counters
            # say so rather than claim what the rollback took back.
            self.counters.received += len(items)
            for it in items:
                self._skip(it.topic, f"the dashboard database failed ({type(exc).__name__})")
            raise
        # Counted only after the commit: the counters never claim what is not in the database.
        self.counters.received += len(items)
        self.counters.stored += stored
        for topic, why in skipped:
            self._skip(topic, why)
        self.counters.batches += 1
        update: dict[str, Any] = {"sent": now}
        since = self.live_since(now)
        live = [d for d in (self.store.device(i, since) for i in changed) if d]
        if live:  # a device aged out of the live view is not shown, whatever it changed
            update["devices"] = live
        if activations:
            update["activations"] = activations
        if labels:
            update["labels"] = labels
        if changed or activations or labels:
            if activations or labels or now - self._last_totals >= TOTALS_EVERY_S:
                update.update(self._totals(now))
            else:
                self._totals_owed = True
            if self.notify is not None:
                self.notify(update)
        return update

    def _totals(self, now: float) -> dict[str, Any]:
        self._last_totals = now
        self._totals_owed = False
        n = self.counters
        return {"totals": self.store.totals(now, live_since=self.live_since(now)),
                "ingest": {"received": n.received, "stored": n.stored,
                           "skipped": n.skipped, "dropped": n.dropped}}

    def _send_owed_totals(self) -> None:
        """The last totals held back, once no message came for a second: so the page's
        counts end where the fleet does (e.g. every device offline after a burst)."""
        now = self.clock()
        try:
            update = {"sent": now, **self._totals(now)}
        except Exception:
            log.exception("the dashboard could not count the fleet")
            return
        if self.notify is not None:
            self.notify(update)

    def _checked(self, c: sqlite3.Connection, it: Incoming, now: float,
                 changed: dict[str, None], activations: list[dict[str, Any]],
                 labels: list[dict[str, Any]], skipped: list[tuple[str, str]]) -> bool:
        """Store one message alone, inside its own savepoint: a message that fails in any way
        (a malformed field, a number SQLite cannot hold, ...) is undone and counted skipped,
        and the rest of the batch is kept. True when it was stored."""
        mine_changed: dict[str, None] = {}
        mine_activations: list[dict[str, Any]] = []
        mine_labels: list[dict[str, Any]] = []
        c.execute("SAVEPOINT one_message")
        try:
            kind = self._one(c, it, now, mine_changed, mine_activations, mine_labels)
        except Exception as exc:
            c.execute("ROLLBACK TO one_message")
            c.execute("RELEASE one_message")
            why = str(exc) if isinstance(exc, BadMessage) else \
                f"it cannot be stored ({type(exc).__name__}: {str(exc)[:80]})"
            skipped.append((it.topic, why))
            return False
        c.execute("RELEASE one_message")
        changed.update(mine_changed)
        activations.extend(mine_activations)
        labels.extend(mine_labels)
        return bool(kind)

    def _one(self, c: sqlite3.Connection, it: Incoming, now: float, changed: dict[str, None],
             activations: list[dict[str, Any]], labels: list[dict[str, Any]]) -> str | None:
        where = parse_topic(self.base, it.topic)
        if where is None:
            raise BadMessage("not <base>/<device id>/<what>")
        device, rest = where
        removed = FleetStore.removed_at(c, device)
        if rest == "status":
            online = check_status(it.payload) == "online"
            if removed is not None and it.retain:
                return None  # the broker's copy, or too little to tell: it stays removed
            FleetStore.forget_removal(c, device)
            FleetStore.set_status(c, device, online, now, 0.0 if it.retain else now)
            changed[device] = None
            return rest
        if rest == "state":
            if not it.payload:
                return None  # a retained state being cleared
            state = check_state(decode_object(it.payload))
            if removed is not None and it.retain and state["wall_time"] <= removed:
                return None  # sent before the removal: the broker's copy
            seen = min(now, state["wall_time"]) if it.retain else now
            FleetStore.set_state(c, device, state, now, seen)
            if removed is not None:  # it spoke since its removal: it is back, and online
                FleetStore.forget_removal(c, device)
                FleetStore.set_status(c, device, True, now, seen)
            changed[device] = None
            return rest
        if rest == "event/activation":
            if it.retain:
                raise BadMessage("activation events are never retained")
            a = check_activation(decode_object(it.payload))
            FleetStore.forget_removal(c, device)
            if FleetStore.add_activation(c, device, a, now):
                activations.append({"device": device, **a, "label": "unknown",
                                    "label_status": None})
            changed[device] = None
            return rest
        if rest.startswith("cmd/") and rest.endswith("/result"):
            return self._result(c, device, rest[4:-7], it.payload, now, labels)
        if rest.startswith("cmd/"):
            return None  # commands (ours among them) are not history
        raise BadMessage(f"unknown topic .../{rest[:40]}")

    @staticmethod
    def _result(c: sqlite3.Connection, device: str, name: str, payload: bytes, now: float,
                labels: list[dict[str, Any]]) -> str | None:
        if name != "label":
            return None
        r = decode_object(payload)
        ok = r.get("ok") is True
        tx = r.get("tx") if isinstance(r.get("tx"), str) else None
        error = r.get("error") if isinstance(r.get("error"), str) else None
        ours = FleetStore.label_answered(c, tx, ok, error, now) if tx else None
        if ok:
            aid, label = r.get("activation"), r.get("label")
            if not (isinstance(aid, str) and label in ("true", "false")):
                raise BadMessage("a label result without activation and label")
            FleetStore.apply_label(c, device, aid, label, now)
            labels.append({"device": device, "activation": aid, "label": label,
                           "status": "ok", "tx": tx})
        elif ours is not None:
            labels.append({"device": device, "activation": ours[1], "label": ours[2],
                           "status": "error", "error": error, "tx": tx})
        return "result"

    def _skip(self, topic: str, why: str) -> None:
        n = self.counters.skipped = self.counters.skipped + 1
        self.counters.by_reason[why.split(" (")[0][:60]] = \
            self.counters.by_reason.get(why.split(" (")[0][:60], 0) + 1
        if n <= 20 or n % 1000 == 0:
            log.warning("skipped a broken message on %s: %s (%d skipped so far)",
                        topic[:120], why, n)
