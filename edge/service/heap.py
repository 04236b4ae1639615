"""Gives the C heap's free pages back to the kernel once an hour (glibc's ``malloc_trim``).

What the daemon keeps is bounded (Python objects, SQLite's caches, the MQTT window: a
24-hour soak holds them flat), but glibc's malloc does not return the pages of freed
blocks in the middle of its heap: over days the holes grow and RSS creeps up by some
kB an hour (issue 18, bench/soak_growth.py). ``malloc_trim(0)`` releases every whole free
page, so the RSS again says what is in use. It runs on the event bus's thread, never the
audio thread, at the first ``LoopHealth`` after each hour of the daemon's clock; it holds
malloc's lock for a few milliseconds.

On a C library without ``malloc_trim`` (musl) it does nothing.

>>> heap = HeapTrim(clock)
>>> bus.subscribe("heap-trim", heap.on_event)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge.clock import Clock
from edge.pipeline.events import LoopHealth

log = logging.getLogger(__name__)

TRIM_EVERY_S = 3600.0


def glibc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of the C library this process runs on, or None if it has none."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrim:
    def __init__(self, clock: Clock, every_s: float = TRIM_EVERY_S,
                 trim: Callable[[], object] | None = None) -> None:
        self.clock = clock
        self.every_s = every_s
        self._trim = trim
        self._loaded = trim is not None
        self._last = clock.monotonic()
        self.trims = 0

    def on_event(self, event: object) -> None:
        if not isinstance(event, LoopHealth):
            return
        now = self.clock.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        if not self._loaded:  # ctypes is imported here, an hour in, not at start-up
            self._loaded = True
            self._trim = glibc_trim()
            if self._trim is None:
                log.debug("no malloc_trim in this C library: the heap is not trimmed")
        if self._trim is not None:
            self._trim()
            self.trims += 1
