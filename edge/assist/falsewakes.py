"""The "False wakes today" sensor Home Assistant shows: activations since local midnight that
count as false, by the one rule everyone counts them by (edge.pipeline.outcome).

It starts from the activation log (what was counted today before a restart) and then
counts each activation as it ends; a label given later is counted at the next start. At
local midnight it goes back to 0. The API server's loop thread owns it.

>>> wakes = FalseWakesToday(start=2, now=0.0)
>>> wakes.ended(likely_false=True, wall_time=60.0), wakes.value(60.0)
(True, 3)
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from pathlib import Path

from edge.pipeline.outcome import UNLABELLED, counts_as_false

log = logging.getLogger(__name__)


def local_day(wall_time: float) -> date:
    return datetime.fromtimestamp(wall_time).date()


def midnight_before(wall_time: float) -> float:
    """The epoch seconds of the local midnight that began ``wall_time``'s day."""
    return datetime.combine(local_day(wall_time), datetime.min.time()).timestamp()


def seconds_to_midnight(wall_time: float) -> float:
    """Seconds from ``wall_time`` to the next local midnight."""
    nxt = datetime.combine(local_day(wall_time) + timedelta(days=1), datetime.min.time())
    return max(0.0, nxt.timestamp() - wall_time)


def false_wakes_logged(db: Path, now: float) -> int:
    """False activations in the activation log since local midnight (0 when it cannot be
    read: the sensor then counts from now)."""
    from edge.activations.store import ActivationLog, ActivationLogError

    try:
        with ActivationLog.open(db, create=False) as store:
            return len(store.rows(since=midnight_before(now), false_only=True))
    except ActivationLogError as exc:
        log.debug("false wakes today start from 0: %s", exc)
        return 0


class FalseWakesToday:
    """The count, and the day it is for."""

    def __init__(self, start: int, now: float) -> None:
        self.day = local_day(now)
        self.count = start

    def value(self, now: float) -> int:
        """The count for ``now``'s day (0 on a day with none yet)."""
        if local_day(now) != self.day:
            self.day, self.count = local_day(now), 0
        return self.count

    def ended(self, likely_false: bool, wall_time: float) -> bool:
        """An activation ended; True when it counted (the sensor's state changed)."""
        self.value(wall_time)
        if not counts_as_false(UNLABELLED, likely_false):
            return False
        self.count += 1
        return True
