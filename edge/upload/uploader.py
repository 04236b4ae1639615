"""The uploader: sends queued clips on its own thread, with backoff, and records every attempt.

The audio loop never waits on it: the outbox sink only enqueues (durably) and
wakes this thread. One clip at a time leaves, oldest first; a clip leaves the
outbox only when the destination acknowledged it (MQTT PUBACK, HTTP 2xx).

A failure is reported once, with what to fix (the same failure again is logged at
debug level only), then retried after an exponential backoff with jitter: the
thread waits ``backoff(n)`` after the n-th failure in a row, and the clip that
failed waits ``backoff(its attempts)`` itself, so one clip the receiver keeps
refusing does not hold up the others.

Clock, sleep and randomness are injected, so tests drive time instead of waiting.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from edge.clock import Clock, SystemClock
from edge.errors import UploadError
from edge.privacy.ledger import Ledger
from edge.recent import Recent
from edge.upload.queue import CorruptEntry, Entry, EntryGone, Outbox

log = logging.getLogger(__name__)

IDLE_WAIT_S = 60.0


class Sender(Protocol):
    destination: str
    """Where clips go, without credentials (for logs and the ledger)."""

    def send(self, entry: Entry, payload: bytes) -> None:
        """Deliver and return once acknowledged; raise UploadError (with the fix) otherwise."""
        ...

    def close(self) -> None: ...


class Uploader:
    def __init__(self, outbox: Outbox, sender: Sender, ledger: Ledger | None = None, *,
                 retry_min_s: float = 1.0, retry_max_s: float = 300.0,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 sleep: Callable[[float], None] | None = None,
                 on_delivered: Callable[[str], None] | None = None) -> None:
        self.outbox = outbox
        self.sender = sender
        self.ledger = ledger
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.on_delivered = on_delivered
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sleep = sleep or self._wait
        self._hold_until = 0.0
        self._last_reported = ""
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self.delivered = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.delays: Recent[float] = Recent()
        """The backoffs chosen, in order, the last few hundred (for tests and the audit)."""

    # -- thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A clip was queued: look at the outbox now (unless backing off)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; an upload in flight gets ``timeout`` s. True if it stopped."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the outbox is empty or the destination is failing; True if empty."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while True:
                if self.outbox.count() == 0:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.consecutive_failures or self._stop.is_set():
                    return False
                self._idle.wait(min(left, 0.1))

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception:
                log.exception("uploader failed; retrying in %.0f s", self.retry_max_s)
                wait = self.retry_max_s
            if wait > 0 and not self._stop.is_set():
                self._sleep(wait)
        log.debug("uploader stopped")

    # -- one step -------------------------------------------------------------------------

    def step(self) -> float:
        """Try the next due clip, if any; return how long to wait before the next step."""
        now, mono = self.clock.wall(), self.clock.monotonic()
        if mono < self._hold_until:  # monotonic: a wall clock set back must not stall us
            return self._hold_until - mono
        entry = self.outbox.due(now)
        if entry is None:
            nxt = self.outbox.next_due()
            if nxt is not None and nxt - now > self.retry_max_s:
                # no backoff is longer than retry_max_s: the wall clock went back, and the
                # stored retry times are stale; try the oldest now
                entry = self.outbox.due(nxt)
        if entry is None:
            with self._idle:
                self._idle.notify_all()
            return IDLE_WAIT_S if nxt is None else min(max(nxt - now, 0.01), IDLE_WAIT_S)
        self.attempt(entry)
        return 0.0

    def attempt(self, entry: Entry) -> bool:
        try:
            payload = self.outbox.read(entry)
        except (CorruptEntry, EntryGone):
            return False
        dest = self.sender.destination
        # The ledger hears of an attempt before any byte leaves, and of its result before the
        # clip leaves the outbox: a crash at any point leaves the ledger complete.
        self._note(entry, "sending")
        try:
            self.sender.send(entry, payload)
        except UploadError as exc:
            self._failed(entry, str(exc))
            return False
        self._note(entry, "delivered")
        self.outbox.ack(entry.id)
        self.delivered += 1
        if self.on_delivered is not None:
            try:
                self.on_delivered(entry.id)
            except Exception:
                log.exception("delivery observer failed for clip %s", entry.id)
        if self.consecutive_failures:
            log.warning("upload to %s works again after %d failed attempt(s)", dest,
                        self.consecutive_failures)
        log.debug("delivered clip %s (%d bytes) to %s", entry.id, entry.payload_size, dest)
        self.consecutive_failures = 0
        self._last_reported = ""
        with self._idle:
            self._idle.notify_all()
        return True

    def backoff(self, failures: int) -> float:
        """Exponential in the number of failures, capped, with jitter (half to full)."""
        base = min(self.retry_max_s, self.retry_min_s * 2.0 ** max(failures - 1, 0))
        return self.rng.uniform(base / 2.0, base)

    def _failed(self, entry: Entry, error: str) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        now = self.clock.wall()
        delay = self.backoff(self.consecutive_failures)
        self.delays.append(delay)
        self._hold_until = self.clock.monotonic() + delay
        self.outbox.retry_later(entry.id, now + self.backoff(entry.attempts + 1), error)
        self._note(entry, "failed", error)
        if error != self._last_reported:
            log.error("upload to %s failed: %s. Retrying with backoff; queued clips are kept",
                      self.sender.destination, error)
            self._last_reported = error
        else:
            log.debug("upload to %s failed again (%d in a row): %s; next try in %.1f s",
                      self.sender.destination, self.consecutive_failures, error, delay)
        with self._idle:
            self._idle.notify_all()

    def _note(self, entry: Entry, result: str, error: str = "") -> None:
        if self.ledger is not None:
            self.ledger.append(clip=entry.id, destination=self.sender.destination,
                               bytes=entry.payload_size, sha256=entry.sha256, result=result,
                               error=error)
