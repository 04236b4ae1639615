"""Opt-in audio of likely-false wakes, kept for retraining
(``activations.keep_false_activation_audio``)."""

from __future__ import annotations

from pathlib import Path

from edge.audio.frames import SAMPLE_RATE
from edge.audio.wav import encode_wav
from edge.files import atomic_write, is_clip_id, private_dir
from edge.pipeline.events import ActivationEnded
from edge.privacy.bundle import pack
from edge.privacy.crypto import Sealer, sealer_for


class FalseAudioKeeper:
    """Opt-in audio of likely-false wakes in ``state_dir/false_audio``, sealed when
    ``upload.encrypt_to`` is set. Retention (``upload.retention_days``) and
    ``edge purge`` cover the directory (edge.privacy.retention, edge.privacy.places)."""

    def __init__(self, directory: Path, encrypt_to: str = "") -> None:
        self.directory = directory
        self._sealer: Sealer | None = sealer_for(encrypt_to)

    def keep(self, ev: ActivationEnded) -> str:
        """Write the event's audio; the file name (under ``directory``)."""
        assert ev.audio is not None, "only an activation whose audio was kept"
        if not is_clip_id(ev.activation_id):  # the file name, and what purge deletes
            raise ValueError(f"activation id {ev.activation_id!r} is not one the recorder "
                             "issues (a UUID)")
        private_dir(self.directory)
        data = encode_wav(ev.audio, SAMPLE_RATE)
        if self._sealer is not None:
            d = ev.detection
            meta = {"id": ev.activation_id, "activation_id": ev.activation_id,
                    "model": d.model, "score": ev.peak, "threshold": d.threshold,
                    "reason": ev.reason, "wall_time": ev.wall_time, "duration_s": ev.duration_s,
                    "sample_rate": SAMPLE_RATE, "kind": "false_activation"}
            name = f"{ev.activation_id}.sealed"
            atomic_write(self.directory / name, self._sealer.seal(pack(meta, data)))
        else:
            name = f"{ev.activation_id}.wav"
            atomic_write(self.directory / name, data)
        return name
