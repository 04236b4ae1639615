"""Helpers for the upload tests: clips, configs and outboxes made to order."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import (
    Config,
    HardwareConfig,
    HttpsUploadConfig,
    MqttUploadConfig,
    OutputConfig,
    SecurityConfig,
    UploadConfig,
)
from edge.pipeline.clip import Clip
from edge.privacy.ledger import Ledger
from edge.sinks.local import wav_bytes
from edge.upload.queue import Outbox
from edge.upload.uploader import Sender, Uploader
from tests.waiting import wait_for

DEVICE = "0123456789abcdef"


def make_clip(seconds: float = 1.0, seed: int = 0, clip_id: str | None = None) -> Clip:
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
    return Clip(id=clip_id or str(uuid.UUID(int=int(rng.integers(1 << 62)), version=4)),
                activation_id=str(uuid.uuid4()), model="hey_jarvis", score=0.9, threshold=0.5,
                start=1.0, end=1.0 + seconds, detection_t=2.0, reason="silence",
                vad_speech_ratio=0.5, wall_time=1_700_000_000.0, audio=audio)


def upload_cfg(state: Path, mode: str = "off", *, keep_local: bool = False,
               mqtt: dict[str, Any] | None = None, https: dict[str, Any] | None = None,
               **upload: Any) -> Config:
    upload.setdefault("retry_min_s", 0.05)
    upload.setdefault("retry_max_s", 0.2)
    return Config(
        state_dir=str(state),
        output=OutputConfig(keep_local=keep_local),
        upload=UploadConfig(mode=mode, mqtt=MqttUploadConfig(**(mqtt or {})),
                            https=HttpsUploadConfig(**(https or {})), **upload),
        hardware=RECORDING_LIGHT,
        security=SIMULATED_PINS,
    )


RECORDING_LIGHT = HardwareConfig(profile="generic-usb", pin_factory="mock", mute_pin="none",
                                 button_pin="none")
"""A device that uploads must show when it records (``edge run`` refuses one without a
light): an LED on a simulated pin, no switch, no cancel button."""

SIMULATED_PINS = SecurityConfig(allow_simulated_pins=True)
"""The opt-out a device with ``RECORDING_LIGHT`` needs to upload: its pins are simulated
(``edge run`` refuses that unless the owner accepts it in ``[security]``)."""


def mqtt_opts(broker: Any, **kw: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, "tls": False, "timeout_s": 5.0, **kw}


class Rig:
    """Outbox + ledger + uploader thread with a short backoff, around one real sender."""

    def __init__(self, tmp: Path, sender: Sender) -> None:
        self.ledger = Ledger(tmp / "ledger.jsonl")
        self.outbox = Outbox(tmp / "outbox", ledger=self.ledger)
        self.sender = sender
        self.uploader = Uploader(self.outbox, sender, self.ledger, retry_min_s=0.05,
                                 retry_max_s=0.2)
        self.uploader.start()

    def put(self, n: int, seed: int = 0, seconds: float = 0.5) -> dict[str, bytes]:
        clips = {}
        for i in range(n):
            c = make_clip(seconds, seed=seed + i)
            wav = wav_bytes(c)
            self.outbox.put(c.id, wav, "audio/wav", c.metadata())
            clips[c.id] = wav
        self.uploader.wake()
        return clips

    def wait_failures(self, n: int, timeout: float = 20.0) -> None:
        wait_for(lambda: self.uploader.failures >= n, timeout, f"{n} failed upload(s)")

    def wait_empty(self, timeout: float = 20.0) -> None:
        wait_for(lambda: self.outbox.count() == 0, timeout, "the outbox to empty")

    def close(self) -> None:
        self.uploader.stop()
        self.sender.close()
        self.outbox.close()


def errors(caplog: Any, text: str) -> list[str]:
    """ERROR log messages containing ``text``."""
    return [r.getMessage() for r in caplog.records
            if r.levelname == "ERROR" and text in r.getMessage()]


@contextlib.contextmanager
def rigs(tmp: Path, make_sender: Callable[..., Sender]) -> Iterator[Callable[..., Rig]]:
    """``make(**config)`` -> a running Rig around ``make_sender(**config)``; all closed after."""
    made: list[Rig] = []

    def make(**config: Any) -> Rig:
        r = Rig(tmp / f"rig{len(made)}", make_sender(**config))
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()
