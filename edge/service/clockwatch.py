"""Notices when the wall clock jumps (NTP at boot on a Pi without a real-time clock, a
person setting the date) and says so; nothing on the device depends on the wall clock
going forward.

What uses which clock: stream time (frames counted) for clip boundaries, refractory
periods and listening time; the monotonic clock for backoffs and timeouts; the wall clock
only to stamp records (activation times, clip times, the ledger). A jump therefore moves
stamps, which this watch explains in the log, and changes nothing else.

>>> watch = ClockWatch(clock)
>>> runner.on_frame.append(watch.on_frame)     # doctest: +SKIP
"""

from __future__ import annotations

import logging

from edge.clock import Clock
from edge.recent import Recent

log = logging.getLogger(__name__)

CHECK_EVERY_FRAMES = 125
"""Ten seconds of audio between checks (a subtraction, on the audio thread)."""
TOLERANCE_S = 2.0


class ClockWatch:
    def __init__(self, clock: Clock, tolerance_s: float = TOLERANCE_S) -> None:
        self.clock = clock
        self.tolerance_s = tolerance_s
        self.jumps: Recent[float] = Recent()
        """The jumps noticed (the last few hundred), in seconds (negative: backwards)."""
        self._offset: float | None = None
        self._frames = 0

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check(self) -> float:
        """Compare wall and monotonic time; log and return a jump beyond the tolerance."""
        offset = self.clock.wall() - self.clock.monotonic()
        if self._offset is None:
            self._offset = offset
            return 0.0
        jump, self._offset = offset - self._offset, offset
        if abs(jump) <= self.tolerance_s:
            return 0.0
        self.jumps.append(jump)
        log.warning("the wall clock jumped %s by %.0f s (NTP or a manual change); "
                    "activation and clip times after this are stamped with the new time, "
                    "listening time and clip lengths are counted from the audio and are "
                    "not affected", "forward" if jump > 0 else "back", abs(jump))
        return jump

    def on_frame(self) -> None:
        """The audio loop's frame hook: a check every ten seconds of audio."""
        self._frames += 1
        if self._frames % CHECK_EVERY_FRAMES == 1:
            self.check()
