"""Helpers the satellite tests share (ESPHome and Wyoming): the live daemon with assist on,
waiting inside a client's coroutine, and `edge run` on an ALSA microphone.

    sat = assemble(cfg, source, factory, speaker)   # the daemon as `edge run` builds it
    sat.run(); ...; sat.stop()
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.assist.keys import key_path, read_key
from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.compose.daemon import Device
from edge.config import Config, HardwareConfig, replace
from edge.privacy.ledger import read_ledger
from tests.device import build
from tests.fakes import Collector, HeldSource
from tests.fixtures.audio import phrase

DEVICE_ID = "0123456789abcdef"
MUTE_PIN = 22
"""The generic-usb board's mute switch (muted while high)."""
ALSA_LEAD_S = 8.0
"""Silence before anyone speaks to `edge run`: time for the client to connect."""


def wake_stream() -> np.ndarray:
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                         phrase("turn on the kitchen lights"), synth.silence(2.5)])


async def until(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``tests.waiting.wait_for`` for a coroutine: the first truthy ``cond()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := cond()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


@dataclass
class Satellite:
    """The live daemon with assist on, its audio loop run on a thread by ``running``."""

    device: Device
    cfg: Config
    events: Collector
    source: Any
    thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        key = read_key(key_path(self.cfg))
        assert key is not None
        return key

    @property
    def port(self) -> int:
        assert self.device.assist is not None
        return self.device.assist.port

    def run(self) -> None:
        self.thread = threading.Thread(target=self.device.daemon.run, name="audio-loop",
                                       kwargs={"install_signals": False}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is None:
            self.device.daemon.close()
            return
        if isinstance(self.source, HeldSource):
            self.source.release.set()
        self.device.daemon.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the audio loop did not stop"

    def ledger(self) -> list[dict[str, Any]]:
        return read_ledger(self.cfg.state_path / "ledger.jsonl").entries


def assemble(cfg: Config, source: Any = None, factory: Any = None, speaker: Any = None,
             **seams: Any) -> Satellite:
    """The daemon of ``cfg`` (assist on) listening to ``source`` (None: a wake word, then
    held quiet); with a pin ``factory``, on the generic-usb board (its mute switch on
    ``MUTE_PIN``); answers play on ``speaker`` (None: on nothing); ``seams``: more of
    ``tests.device.build``'s."""
    seams["device_id"] = DEVICE_ID
    if speaker is None:
        cfg = replace(cfg, audio=replace(cfg.audio, output="none"))
    else:
        seams["speaker"] = speaker
    if factory is not None:
        cfg = replace(cfg, hardware=HardwareConfig(profile="generic-usb"))
        seams["pin_factory"] = factory
    source = source if source is not None else HeldSource(wake_stream())
    device = build(cfg, source, **seams)
    events = Collector()
    device.daemon.bus.subscribe("test", events)
    return Satellite(device, cfg, events, source)


def stopped_after(make: Callable[..., Satellite]) -> Iterator[Callable[..., Satellite]]:
    """A fixture's body: ``make`` as the test calls it; each satellite it made is stopped
    after the test."""
    made: list[Satellite] = []

    def tracked(*args: Any, **kwargs: Any) -> Satellite:
        made.append(make(*args, **kwargs))
        return made[-1]

    yield tracked
    for sat in made:
        sat.stop()


# ---- `edge run` on an ALSA microphone ------------------------------------------------------


def alsa_stream() -> np.ndarray:
    """What the ALSA microphone plays: ``ALSA_LEAD_S`` of silence, then ``wake_stream()``."""
    return synth.concat([synth.silence(ALSA_LEAD_S), wake_stream()])


def listening(proc: subprocess.Popen[str], port: int) -> bool:
    """`edge run` (``proc``, still running) accepts connections on ``port``."""
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def assert_streamed_from_the_wake_word(stream: np.ndarray, heard: np.ndarray) -> None:
    """``heard`` is the microphone's ``stream`` (``alsa_stream()``), from one frame boundary
    before the wake word on, the wake word included."""
    lead = int(ALSA_LEAD_S * 16000)
    starts = [i for i in range(0, lead + len(phrase("hey jarvis")), FRAME_SAMPLES)
              if np.array_equal(stream[i:i + len(heard)], heard)]
    assert len(starts) == 1 and starts[0] <= lead + 16000  # the wake word is included
