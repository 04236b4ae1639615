"""The local-directory sink: WAV plus a JSON sidecar, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edge.audio.wav import encode_wav
from edge.files import atomic_write, is_clip_id, private_dir
from edge.pipeline.clip import Clip
from edge.privacy.bundle import pack

if TYPE_CHECKING:
    from edge.privacy.crypto import Sealer


def wav_bytes(clip: Clip) -> bytes:
    return encode_wav(clip.audio, clip.sample_rate)


class LocalDirSink:
    """Writes ``<id>.wav`` then ``<id>.json``; the sidecar's presence marks a complete clip.

    With a ``sealer`` (``upload.encrypt_to``) it writes only ``<id>.sealed``: the
    metadata and WAV sealed together, so no clip touches the disk in the clear
    (``edge decrypt`` opens it).
    """

    name = "local"

    def __init__(self, directory: Path, sealer: Sealer | None = None) -> None:
        self.directory = directory
        self.sealer = sealer
        private_dir(directory)

    def deliver(self, clip: Clip) -> str:
        if not is_clip_id(clip.id):  # the file name, and what purge and retention delete
            raise ValueError(f"clip id {clip.id!r} is not one the recorder issues (a UUID)")
        if self.sealer is not None:
            sealed = self.directory / f"{clip.id}.sealed"
            atomic_write(sealed, self.sealer.seal(pack(clip.metadata(), wav_bytes(clip))))
            return str(sealed)
        wav = self.directory / f"{clip.id}.wav"
        atomic_write(wav, wav_bytes(clip))
        meta = dict(clip.metadata(), file=wav.name)
        atomic_write(self.directory / f"{clip.id}.json",
                     json.dumps(meta, indent=2, sort_keys=True).encode())
        return str(wav)

    def close(self) -> None:
        pass
