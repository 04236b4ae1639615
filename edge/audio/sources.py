"""Audio sources: anything that yields 80 ms frames of 16 kHz mono int16.

Every source converts what it is given (any rate, any channel count) through
one ``FrameAssembler``, so a file, a live mic array and a test stream all reach
the recorder in the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE
from edge.errors import AudioFormatError


class AudioSource(Protocol):
    @property
    def name(self) -> str:
        """What the logs call this source (a device name, a file name)."""
        ...

    def start(self) -> None:
        """Open or restart capture."""
        ...

    def stop(self) -> None:
        """Stop capture (on mute): the stream is really stopped, not merely ignored."""
        ...

    def read(self) -> np.ndarray | None:
        """The next 1280-sample int16 frame at 16 kHz, or None when the stream has ended."""
        ...

    def close(self) -> None: ...


class FrameAssembler:
    """Channel selection or mixing, resampling to 16 kHz, and cutting into 80 ms frames."""

    def __init__(self, rate: int, channels: int, channel: int = -1) -> None:
        if channels < 1:
            raise AudioFormatError(f"audio has {channels} channels; at least 1 is needed")
        if channel >= channels:
            raise AudioFormatError(
                f"channel {channel} was asked for, but the audio has {channels} channels "
                f"(0 to {channels - 1}); set audio.channel to one of those, or -1 to average"
            )
        if rate < 8000 or rate > 384000:
            raise AudioFormatError(f"sample rate {rate} Hz is not supported; use 8-384 kHz")
        self.rate = rate
        self.channels = channels
        self.channel = channel
        self._resampler: Any = None
        if rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                  quality="HQ")
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, chunk: np.ndarray, last: bool = False) -> list[np.ndarray]:
        """Take float32 samples in [-1, 1], shaped (n, channels); return whole frames."""
        if chunk.ndim == 1:
            chunk = chunk.reshape(-1, self.channels)
        mono = chunk[:, self.channel] if self.channel >= 0 else chunk.mean(axis=1)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        buf = np.concatenate((self._pending, mono)) if self._pending.size else mono
        n = len(buf) // FRAME_SAMPLES
        frames = [_to_int16(buf[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(n)]
        self._pending = buf[n * FRAME_SAMPLES:].copy()
        if last and self._pending.size:
            tail = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            tail[: self._pending.size] = self._pending
            frames.append(_to_int16(tail))
            self._pending = np.zeros(0, dtype=np.float32)
        return frames

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            self._resampler.clear()


def _to_int16(x: np.ndarray) -> np.ndarray:
    # a float file may hold NaN or huge values: silence and full scale, not undefined casts
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


class ArraySource:
    """A source over samples already in memory (demo streams, tests)."""

    def __init__(self, samples: np.ndarray, name: str = "array") -> None:
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise AudioFormatError("ArraySource takes 16 kHz mono int16 samples")
        self.name = name
        self._samples = samples
        self._pos = 0
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def read(self) -> np.ndarray | None:
        if self._pos >= len(self._samples):
            return None
        frame = self._samples[self._pos:self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate((frame, np.zeros(FRAME_SAMPLES - len(frame), np.int16)))
        return frame

    def close(self) -> None:
        self.started = False


class PacedSource:
    """Wraps a source so frames arrive in real time (80 ms apart), like a live microphone."""

    def __init__(self, inner: AudioSource, sleep: Callable[[float], None] | None = None,
                 monotonic: Callable[[], float] | None = None) -> None:
        import time

        self.inner = inner
        self.name = f"{inner.name} (real time)"
        self._sleep = sleep or time.sleep
        self._now = monotonic or time.monotonic
        self._next: float | None = None

    def start(self) -> None:
        self.inner.start()
        self._next = None

    def stop(self) -> None:
        self.inner.stop()

    def read(self) -> np.ndarray | None:
        now = self._now()
        if self._next is None:
            self._next = now
        if self._next > now:
            self._sleep(self._next - now)
        self._next += FRAME_S
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()
