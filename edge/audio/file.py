"""WAV or FLAC files through soundfile, streamed block by block, never loaded whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.sources import FrameAssembler
from edge.errors import AudioFormatError

BLOCK = 16384


class FileSource:
    """Frames from an audio file, converted to 16 kHz mono."""

    def __init__(self, path: Path | str, channel: int = -1) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.channel = channel
        self._f: Any = None
        self._asm: FrameAssembler | None = None
        self._queue: list[np.ndarray] = []
        self._eof = False
        self.open_info()

    def open_info(self) -> None:
        import soundfile as sf

        if not self.path.exists():
            raise AudioFormatError(f"audio file {self.path} does not exist")
        try:
            self._f = sf.SoundFile(str(self.path))
        except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
            raise AudioFormatError(
                f"{self.path} is not a readable audio file ({_short(exc)}); "
                "give a WAV or FLAC file"
            ) from None
        if wav_is_truncated(self.path):
            self._f.close()
            raise AudioFormatError(
                f"{self.path} is truncated: its WAV header declares more audio than the file "
                "holds; re-copy or re-export the file"
            )
        if self._f.frames == 0:
            self._f.close()
            raise AudioFormatError(f"{self.path} holds no audio samples")
        try:
            self._asm = FrameAssembler(self._f.samplerate, self._f.channels, self.channel)
        except AudioFormatError as exc:
            self._f.close()  # a bad channel must not leave the file open
            self._f = None
            raise AudioFormatError(f"{self.path}: {exc}") from None

    @property
    def duration_s(self) -> float:
        return float(self._f.frames) / float(self._f.samplerate) if self._f is not None else 0.0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        while not self._queue:
            if self._eof or self._f is None:  # ended or closed
                return None
            self._fill()
        return self._queue.pop(0)

    def _fill(self) -> None:
        assert self._asm is not None
        try:
            block = self._f.read(BLOCK, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioFormatError(f"{self.path} is truncated or corrupt ({_short(exc)})") \
                from None
        last = len(block) < BLOCK
        self._queue.extend(self._asm.push(block, last=last))
        if last:
            self._eof = True

    def close(self) -> None:
        self._queue.clear()
        if self._f is not None:
            self._f.close()
            self._f = None


def wav_is_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE file's data chunk declares more bytes than the file holds."""
    import struct

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                # 0 and 0xFFFFFFFF mark a stream written without a known length
                return csize not in (0, 0xFFFFFFFF) and csize > size - pos - 8
            pos += 8 + csize + (csize & 1)
    return False


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
