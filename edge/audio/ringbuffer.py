"""The pre-roll ring buffer: the last few seconds of audio, in memory only.

Audio from before a detection lives here and nowhere else: it is never written
to disk, never sent and never logged. It is zeroed on mute and on shutdown.

>>> rb = RingBuffer(frames=3, frame_samples=4)
>>> for v in (1, 2, 3, 4):
...     rb.push(np.full(4, v, dtype=np.int16))
>>> rb.snapshot().tolist()
[2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]
"""

from __future__ import annotations

import numpy as np

MAX_PRE_ROLL_S = 10.0


class RingBuffer:
    """A preallocated ring of whole frames of int16 audio."""

    def __init__(self, frames: int, frame_samples: int) -> None:
        if frames < 1:
            raise ValueError("a ring buffer holds at least one frame")
        self._buf = np.zeros((frames, frame_samples), dtype=np.int16)
        self._next = 0
        self._filled = 0

    @property
    def capacity_frames(self) -> int:
        return self._buf.shape[0]

    @property
    def filled_frames(self) -> int:
        return self._filled

    def push(self, frame: np.ndarray) -> None:
        self._buf[self._next] = frame
        self._next = (self._next + 1) % self._buf.shape[0]
        self._filled = min(self._filled + 1, self._buf.shape[0])

    def snapshot(self) -> np.ndarray:
        """A copy of the held audio, oldest first."""
        if self._filled < self._buf.shape[0]:
            return self._buf[: self._filled].reshape(-1).copy()
        return np.concatenate((self._buf[self._next:], self._buf[: self._next])).reshape(-1)

    def zero(self) -> None:
        """Overwrite every held sample with zeros and forget them."""
        self._buf.fill(0)
        self._next = 0
        self._filled = 0

    def is_zeroed(self) -> bool:
        return self._filled == 0 and not self._buf.any()
