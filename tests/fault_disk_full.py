"""The disk-full scenario, run by tests/test_faults.py inside its own mount namespace.

    unshare -rm sh -c 'mount -t tmpfs -o size=4m tmpfs STATE && \
        python -m tests.fault_disk_full STATE'

The state directory is a 4 MB tmpfs, filled to the last byte before the daemon starts.
Three wake phrases follow: the first clip finds the disk full; once it has ended the
filler is deleted (the owner frees space), and two more clips follow. Prints one JSON
object: what the daemon did, what is on the disk, and what it logged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from edge.activations.store import ActivationLog
from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource
from edge.config import Config, OutputConfig
from tests.device import build
from tests.waiting import wait_for


def wake_and_request() -> list[np.ndarray]:
    return [synth.silence(1.0), synth.speak("hey jarvis"), synth.silence(0.3),
            synth.speak("turn on the kitchen lights"), synth.silence(3.0)]


class HookedSource(ArraySource):
    def __init__(self, samples: np.ndarray, at: dict[int, object]) -> None:
        super().__init__(samples, "disk-full stream")
        self.at = at
        self.reads = 0

    def read(self) -> np.ndarray | None:
        self.reads += 1
        fn = self.at.pop(self.reads, None)
        if callable(fn):
            fn()
        return super().read()


def fill(directory: Path) -> Path:
    """Write zeros until the filesystem is full, to the last block."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def main(state: str) -> int:
    state_dir = Path(state)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(Keep())
    cfg = Config(state_dir=str(state_dir), output=OutputConfig(keep_local=True))
    one = synth.concat(wake_and_request())
    stream = synth.concat([one, synth.silence(2.0), one, one, synth.silence(1.0)])
    first_end = (len(one) + 2 * 16000) // FRAME_SAMPLES  # the first clip has ended by then
    (state_dir / "clips").mkdir(parents=True, exist_ok=True, mode=0o700)
    filler = fill(state_dir)
    freed = {"at_frame": first_end}
    def free_space() -> None:
        # the owner frees space only after the first clip has met the full disk
        with contextlib.suppress(AssertionError):  # on the audio thread: judged by the caller
            wait_for(lambda: daemon.dispatcher.failed, 20.0, "a clip to meet the full disk")
        freed["failed_before"] = daemon.dispatcher.failed
        filler.unlink()

    source = HookedSource(stream, {first_end: free_space})
    daemon = build(cfg, source).daemon
    daemon.dispatcher.retry_s = 0.2
    daemon.run(install_signals=False)
    clips = sorted(p.name for p in (state_dir / "clips").iterdir())
    with ActivationLog.open(state_dir / "activations.sqlite3", create=False) as log_:
        rows = log_.rows()
    print(json.dumps({
        "frames_total": len(stream) // FRAME_SAMPLES + (len(stream) % FRAME_SAMPLES > 0),
        "frames_heard": daemon.recorder.stats.frames,
        "detections": daemon.recorder.stats.detections,
        "clips_made": daemon.recorder.stats.clips,
        "clip_files": clips,
        "activation_rows": len(rows),
        "dispatcher": {"failed": daemon.dispatcher.failed, "retried": daemon.dispatcher.retried,
                       "lost": daemon.dispatcher.lost},
        "freed": freed,
        "log": records,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
