"""Records long-lived objects keep of what they did stay bounded (issue 18's soak): a
device that runs for years must not keep every look, chime, backoff or clock jump."""

from __future__ import annotations

import pytest

from edge.recent import KEEP, Recent
from edge.service.clockwatch import ClockWatch


def test_recent_keeps_the_newest_entries_in_order_and_stays_bounded():
    r: Recent[int] = Recent(10)
    for i in range(1000):
        r.append(i)
        assert len(r) <= 10
    assert r[-1] == 999 and r == list(range(r[0], 1000))
    assert r[-2:] == [998, 999]


def test_recent_refuses_a_size_that_cannot_keep_anything():
    with pytest.raises(ValueError, match="at least 2"):
        Recent(1)


class JumpingClock:
    """Monotonic time stands still; the wall clock is set forward (NTP, over and over)."""

    def __init__(self) -> None:
        self.wall_s = 1_700_000_000.0

    def wall(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return 1000.0


def test_a_clock_that_jumps_for_years_is_remembered_within_bounds():
    clock = JumpingClock()
    watch = ClockWatch(clock)
    watch.check()
    for _ in range(3 * KEEP):
        clock.wall_s += 100.0
        assert watch.check() == pytest.approx(100.0)
    assert 0 < len(watch.jumps) <= KEEP
    assert watch.jumps[-1] == pytest.approx(100.0)
