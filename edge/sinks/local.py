"""The local-directory sink: WAV plus a JSON sidecar, each written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import soundfile as sf

from edge.clip import Clip
from edge.fsutil import atomic_write


def wav_bytes(clip: Clip) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, clip.audio, clip.sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


class LocalDirSink:
    """Writes ``<id>.wav`` then ``<id>.json``; the sidecar's presence marks a complete clip."""

    name = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def deliver(self, clip: Clip) -> str:
        wav = self.directory / f"{clip.id}.wav"
        atomic_write(wav, wav_bytes(clip))
        meta = dict(clip.metadata(), file=wav.name)
        atomic_write(self.directory / f"{clip.id}.json",
                     json.dumps(meta, indent=2, sort_keys=True).encode())
        return str(wav)

    def close(self) -> None:
        pass
