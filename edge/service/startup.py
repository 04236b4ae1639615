"""How long the daemon took to start: one log line at the first scored frame; and the
cyclic collector paused while it starts.

On a Pi Zero 2 W start-up is seconds, not milliseconds, and a person waiting after a
reboot wants to know when the device hears them. The line is logged once, from the audio
loop's frame hook (after the first frame has gone through the detector), with the time
since the process started as the kernel counts it.

Start-up builds what lives as long as the daemon (modules, models, subsystems); the cyclic
collector's passes over that growing heap cost 6-8 ms before the first frame and find
almost nothing (about 460 objects, 80 kB). So ``edge run`` (and the soak) calls
``pause_collector`` before it builds the daemon and ``freeze_start_up_heap`` just before
the loop runs: frozen (``gc.freeze``), that heap is never scanned again, its little garbage
kept with it, and the collector runs as usual on what comes after.

>>> first = FirstFrame()
>>> runner.on_frame.append(first.on_frame)     # doctest: +SKIP
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable

from edge.service.logs import fields

log = logging.getLogger(__name__)


def pause_collector() -> None:
    """Pause the cyclic collector while the daemon starts (see the module's docstring)."""
    gc.disable()


def freeze_start_up_heap() -> None:
    """Freeze every object start-up built, and run the collector again for what follows."""
    gc.freeze()
    gc.enable()


def stat_fields(stat_path: str = "/proc/self/stat") -> list[str]:
    """A process's /proc stat from field 3 (its state) on: index ``n - 3`` is the man page's
    field ``n``. The command name (field 2) may hold spaces and parentheses, so the fields
    are counted after the last ')'. Raises OSError or ValueError where /proc does not say."""
    with open(stat_path) as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2:].split()


def process_age_s(stat_path: str = "/proc/self/stat") -> float | None:
    """Seconds since this process started (the kernel's start time, field 22, in clock ticks
    since boot, against ``CLOCK_BOOTTIME``), or None where /proc does not say."""
    try:
        start_ticks = int(stat_fields(stat_path)[22 - 3])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class FirstFrame:
    """The audio loop's frame hook: logs the start-up time once, at the first frame, then
    runs ``then`` (what start-up left until the device hears: loading the VAD)."""

    def __init__(self, then: Callable[[], object] | None = None) -> None:
        self.done = False
        self._then = then

    def on_frame(self) -> None:
        if self.done:
            return
        self.done = True
        age = process_age_s()
        if age is None:
            log.info("first frame scored", extra=fields(event="first_frame"))
        else:
            log.info("first frame scored %.2f s after the process started", age,
                     extra=fields(event="first_frame", startup_s=round(age, 3)))
        if self._then is not None:
            self._then()
