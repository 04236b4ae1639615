"""WAV encoding with the standard library.

Clips are encoded in memory with ``wave`` rather than soundfile: soundfile's in-memory
I/O goes through cffi callbacks, which need writable-executable memory, and the service
runs with ``MemoryDenyWriteExecute=yes``.
"""

from __future__ import annotations

import io
import wave

import numpy as np


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono WAV bytes of int16 ``samples``."""
    pcm = np.asarray(samples, dtype="<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
