"""The hourly heap trim (edge/service/heap.py): on the bus, once an hour of the daemon's
clock, with glibc's real malloc_trim on this machine."""

from __future__ import annotations

import ctypes

from edge.clock import FakeClock
from edge.pipeline.events import LoopHealth
from edge.service.heap import HeapTrim, glibc_trim


def health(clock: FakeClock) -> LoopHealth:
    return LoopHealth(rtf=0.05, t=0.0, monotonic=clock.monotonic())


def test_trims_once_per_hour_of_the_clock_and_only_on_loop_health():
    clock = FakeClock()
    calls: list[float] = []
    heap = HeapTrim(clock, trim=lambda: calls.append(clock.monotonic()))
    for _ in range(3 * 3600):  # three hours of once-a-second health events
        clock.advance(1.0)
        heap.on_event(health(clock))
        heap.on_event(object())  # any other event is ignored
    assert heap.trims == len(calls) == 3
    assert [round(b - a) for a, b in zip(calls, calls[1:], strict=False)] == [3600, 3600]


def rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


def test_glibc_malloc_trim_gives_the_pages_of_holes_in_the_heap_back():
    trim = glibc_trim()
    assert trim is not None  # this machine's C library is glibc
    # 64 MiB in 4000-byte blocks (malloc's heap, not pymalloc's), written so the pages are
    # resident; then 15 of every 16 freed: holes that malloc keeps, under live blocks
    blocks = [ctypes.create_string_buffer(4000) for _ in range(16384)]
    for b in blocks:
        ctypes.memset(b, 1, 4000)
    kept = blocks[::16]
    del blocks
    before = rss_anon_kb()
    trim()
    after = rss_anon_kb()
    assert before - after > 30 * 1024, (before, after)
    assert all(b.raw[:1] == b"\x01" for b in kept)  # live blocks untouched


def test_the_first_trim_loads_the_c_library_function_lazily():
    clock = FakeClock()
    heap = HeapTrim(clock)
    heap.on_event(health(clock))
    assert heap.trims == 0 and not heap._loaded  # ctypes not touched before the hour
    clock.advance(3600.0)
    heap.on_event(health(clock))
    assert heap.trims == 1
