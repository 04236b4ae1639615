"""Clocks, passed in rather than reached for, so tests can drive time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


def iso(t: float, zulu: bool = True) -> str:
    """Epoch seconds as ISO 8601 UTC to the millisecond, ending ``Z`` (or ``+00:00``, the
    ledger's form, when ``zulu`` is false).

    >>> iso(0.0), iso(0.0, zulu=False)
    ('1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000+00:00')
    """
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if zulu else text


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self._wall = wall
        self._mono = monotonic

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds
