"""What grows in a soak: the daemon of bench/soak.py, its memory taken apart while it runs.

    .venv/bin/python bench/soak_growth.py --no-trace --hours 8   # at speed: about 4 min
    .venv/bin/python bench/soak_growth.py --hours 2 --frames 8   # tracemalloc: far slower

With ``--no-trace`` a thread prints, every ``--every`` wall seconds, the RSS split into
anonymous, file-backed and shared memory, what SQLite's allocator holds (its page caches
among it), Python's allocated blocks and the objects the garbage collector tracks; at the
end, the object types that grew most. That is how the soak's slope was found (issue 18):
SQLite's page caches filling with the activation log, gpiozero's MockPin state histories
(the soak's own instrumentation) and the MQTT device's one-hour window of activations,
which an accelerated soak filled with every activation of the run (its clock now follows the
audio); then, with every Python object and SQLite flat, glibc's heap keeping freed pages
(bounded by the unit's malloc settings and the daemon's hourly malloc_trim).

The soak (real models, MQTT uploads to a loopback Mosquitto, mutes, broker restarts) runs
as in bench/soak.py, while a thread takes a tracemalloc snapshot every ``--every`` wall
seconds. Printed: the Python allocations that grew most between the first snapshot after
the warm-up and the last, grouped by the allocating line (with its callers), and the RSS
at each snapshot. Python-level growth only: memory that C libraries keep (malloc arenas,
OpenBLAS buffers) shows in the RSS column and not in the table.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import soak  # noqa: E402
from soak import proc_status  # noqa: E402


def rss_kb() -> int:
    return proc_status("VmRSS")


def rss_parts() -> str:
    """Anonymous, file-backed and shared-memory RSS (a WAL index is shared memory)."""
    return "  ".join(f"{k[3:]} {proc_status(k) / 1024:6.1f}"
                     for k in ("RssAnon", "RssFile", "RssShmem"))


def sqlite_kb() -> float:
    """What SQLite's allocator holds now (page caches and all), in kB; -1 if unknown."""
    import ctypes
    import ctypes.util
    import sqlite3  # noqa: F401  (loads the library the connections use)

    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return -1.0
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return float(lib.sqlite3_memory_used()) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=2.0, help="hours of audio")
    ap.add_argument("--every", type=float, default=20.0, help="wall seconds between snapshots")
    ap.add_argument("--frames", type=int, default=6, help="traceback depth kept")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--base-after", type=float, default=120.0, metavar="S",
                    help="wall seconds of warm-up before the base snapshot")
    ap.add_argument("--no-trace", action="store_true",
                    help="no tracemalloc, at speed: the RSS parts, SQLite's memory, Python's "
                         "allocated blocks and the objects the garbage collector tracks, by type")
    args = ap.parse_args()

    malloc = soak.unit_malloc_env()
    if any(os.environ.get(k) != v for k, v in malloc.items()):  # as bench/soak.py does
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()),
                                   *sys.argv[1:]], {**os.environ, **malloc})

    if not args.no_trace:
        tracemalloc.start(args.frames)
    # Only the base and the latest snapshot are kept: a snapshot holds every trace, so a
    # list of them would itself grow by tens of MB.
    snaps: list[tuple[float, int, tracemalloc.Snapshot]] = []
    counted: list[tuple[float, int, Counter[str]]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def keep(kept: list[Any], entry: Any, wall: float) -> None:
        """The base (the last entry before ``--base-after``) and the latest one only."""
        if not kept or wall < args.base_after:
            kept[:] = [entry]
        else:
            kept[1:] = [entry]

    def sampler() -> None:
        while not done.wait(args.every):
            wall = time.monotonic() - t0
            if args.no_trace:
                counts = Counter(type(o).__qualname__ for o in gc.get_objects())
                keep(counted, (wall, rss_kb(), counts), wall)
                print(f"  {wall:7.0f} s wall  RSS {rss_kb() / 1024:7.1f} MB ({rss_parts()})  "
                      f"sqlite {sqlite_kb():7.0f} kB  python blocks "
                      f"{sys.getallocatedblocks():8d}  gc objects {sum(counts.values()):7d}",
                      flush=True)
                continue
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            keep(snaps, (wall, rss_kb(), snap), wall)
            print(f"  {wall:7.0f} s wall  RSS {rss_kb() / 1024:7.1f} MB ({rss_parts()})  "
                  f"traced {tracemalloc.get_traced_memory()[0] / 1024:8.0f} kB  "
                  f"sqlite {sqlite_kb():7.0f} kB", flush=True)

    thread = threading.Thread(target=sampler, name="soak-growth-sampler", daemon=True)
    thread.start()
    result = soak.run_soak(args.hours, None, warmup_s=args.hours * 3600 * 0.2)
    done.set()
    thread.join()
    print(f"soak: {result['hours_of_audio']} h of audio in {result['wall_s']} s, "
          f"RSS growth {result['rss_growth_kb']} kB after warm-up, clips {result['clips']}")
    for smp in result["samples"]:
        print(f"  audio {smp['audio_h']:7.3f} h  wall {smp['wall_s']:7.1f} s  "
              f"RSS {smp['rss_kb'] / 1024:7.1f} MB")
    if args.no_trace:
        if len(counted) < 2:
            print("too few samples; run longer or sample more often")
            return 1
        (w0, r0, c0), (w1, r1, c1) = counted
        print(f"\nobjects the garbage collector tracks, {w0:.0f} s -> {w1:.0f} s of wall time "
              f"(RSS {r0 / 1024:.1f} -> {r1 / 1024:.1f} MB), most grown types:")
        grown = sorted(((c1[k] - c0.get(k, 0), k) for k in c1), reverse=True)[: args.top]
        for diff, name in grown:
            if diff > 0:
                print(f"  {diff:+8d}  {name} (now {c1[name]})")
        return 0
    if len(snaps) < 2:
        print("too few snapshots; run longer or take them more often")
        return 1
    base, last = snaps
    print(f"\nPython allocations grown from {base[0]:.0f} s to {last[0]:.0f} s of wall time "
          f"(RSS {base[1] / 1024:.1f} -> {last[1] / 1024:.1f} MB):")
    for stat in last[2].compare_to(base[2], "traceback")[: args.top]:
        if stat.size_diff <= 0:
            continue
        print(f"\n{stat.size_diff / 1024:+9.1f} kB  {stat.count_diff:+6d} blocks  "
              f"(now {stat.size / 1024:.1f} kB)")
        for line in stat.traceback.format()[-2 * args.frames:]:
            print("    " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
