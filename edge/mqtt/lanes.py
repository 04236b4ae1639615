"""The MQTT command worker's inbox: a fast lane served before the normal one.

A mute never waits here at all (it is posted to the audio loop as it arrives, see
``edge.mqtt.device``); its answer, and a purge, go in the fast lane, so a flood of
labels or refusals queued in the normal lane cannot hold them back. Each lane is
bounded in items, and no item holds more than ``command_payloads.MAX_PAYLOAD`` bytes of
payload (a larger one is refused before it is queued), so the inbox is bounded in bytes:
at most ``(FAST + NORMAL) * MAX_PAYLOAD``, about 1.1 MiB.

>>> lanes = Lanes()
>>> lanes.put("label"), lanes.put("purge", fast=True)
(True, True)
>>> lanes.get(0.0), lanes.get(0.0)
('purge', 'label')
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

FAST = 32
"""Items in the fast lane: mute answers and purges, a few at a time."""
NORMAL = 256
"""Items in the normal lane: everything else."""


class Lanes:
    """Two bounded FIFO lanes; ``get`` takes from the fast one first. ``put`` never blocks
    (paho's network thread calls it)."""

    def __init__(self, fast: int = FAST, normal: int = NORMAL) -> None:
        self._lanes = (deque[Any](), deque[Any]())
        self._bounds = (fast, normal)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, fast: bool = False) -> bool:
        """Queue ``item``; False (and nothing queued) when its lane is full."""
        lane = 0 if fast else 1
        with self._cond:
            if len(self._lanes[lane]) >= self._bounds[lane]:
                return False
            self._lanes[lane].append(item)
            self._cond.notify()
            return True

    def get(self, timeout: float) -> Any:
        """The oldest item of the fast lane, else of the normal lane; None once closed;
        ``queue.Empty`` when nothing arrives within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._closed or self._lanes[0] or self._lanes[1]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                self._cond.wait(left)
            if self._closed:
                return None
            return (self._lanes[0] or self._lanes[1]).popleft()

    def close(self) -> None:
        """Wake the reader: every ``get`` from now on gives None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._lanes[0]) + len(self._lanes[1])
