"""An exclusive lock on a file, held for the life of a process (the kernel drops it on exit)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge.errors import StateLockedError


class LockFile:
    """``flock`` on ``path``: one holder at a time, released on close, kill or crash."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> LockFile:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLockedError(f"{self.what} is running (it holds {self.path}); stop it "
                                   "first, e.g. `sudo systemctl stop edge-recorder`") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LockFile:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
