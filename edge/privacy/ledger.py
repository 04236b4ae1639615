"""The ledger: an append-only local record of everything that left, or tried to leave, the device.

One JSON object per line in ``<state_dir>/ledger.jsonl``, each written with
``O_APPEND`` and fsynced before ``append`` returns. Each names the clip, the
destination (never with credentials), the bytes and their sha256, the time and
the result: ``sending`` (written before the first byte leaves), then
``delivered`` or ``failed`` (with the error); ``dropped`` (outbox full),
``expired`` (retention), ``quarantined`` (unreadable entry) or ``purged``.
``edge audit`` prints it.

>>> ledger = Ledger(Path("/tmp/state/ledger.jsonl"))      # doctest: +SKIP
>>> ledger.append(clip="…", destination="https://host/clips", bytes=320044,
...               sha256="…", result="delivered")
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.clock import Clock, SystemClock, iso
from edge.files import open_private, private_dir

log = logging.getLogger(__name__)

RESULTS = ("sending", "delivered", "failed", "dropped", "expired", "quarantined", "purged")


class Ledger:
    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            private_dir(self.path.parent)
            fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
            # A crash mid-line leaves a torn last line: end it, so the next entry stays whole.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")
            self._fd = fd
        return self._fd

    def append(self, *, clip: str, result: str, destination: str = "", bytes: int = 0,
               sha256: str = "", error: str = "", note: str = "") -> None:
        if result not in RESULTS:
            raise ValueError(f"unknown ledger result {result!r}")
        entry: dict[str, Any] = {"time": iso(self.clock.wall(), zulu=False), "clip": clip,
                                 "destination": destination, "bytes": bytes, "sha256": sha256,
                                 "result": result}
        if error:
            entry["error"] = error
        if note:
            entry["note"] = note
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = self._open()
            os.write(fd, line)
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass
class LedgerRead:
    """The ledger's entries, and how many lines could not be read."""

    entries: list[dict[str, Any]]
    unreadable: int
    """Lines that were not a ledger entry (a torn write after a power cut)."""


def read_ledger(path: Path) -> LedgerRead:
    entries: list[dict[str, Any]] = []
    bad = 0
    for line in _lines(path):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(e, dict) and "clip" in e and "result" in e:
            entries.append(e)
        else:
            bad += 1
    return LedgerRead(entries, bad)


def _lines(path: Path) -> Iterator[str]:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    yield line
    except FileNotFoundError:
        return
