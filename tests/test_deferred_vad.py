"""The daemon scores its first frame before it loads the VAD, and loads it right after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio import synth
from edge.audio.sources import ArraySource
from edge.wake.vad import DeferredVad, SileroVad, Vad
from tests.device import build
from tests.fixtures.wake import wake_stream
from tests.upload_helpers import upload_cfg


class CountingVad:
    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def speech_probability(self, frame: np.ndarray) -> float:
        self.calls += 1
        return 0.9

    def reset(self) -> None:
        self.resets += 1


def test_a_deferred_vad_loads_once_when_first_asked() -> None:
    made: list[CountingVad] = []

    def loader() -> Vad:
        made.append(CountingVad())
        return made[-1]

    vad = DeferredVad(loader)
    vad.reset()  # nothing loaded yet: nothing to reset, nothing loaded for it
    assert made == [] and not vad.loaded
    frame = np.zeros(1280, dtype=np.int16)
    assert vad.speech_probability(frame) == 0.9
    assert vad.speech_probability(frame) == 0.9
    vad.reset()
    assert len(made) == 1 and vad.loaded
    assert made[0].calls == 2 and made[0].resets == 1
    assert vad.load() is made[0]


def test_the_daemon_loads_its_vad_after_the_first_frame(tmp_path: Path) -> None:
    device = build(upload_cfg(tmp_path / "state"), ArraySource(synth.silence(1.0)))
    vad = device.daemon.recorder.vad
    assert isinstance(vad, DeferredVad) and not vad.loaded  # built, verified, not read
    device.daemon.run(install_signals=False)
    assert vad.loaded and isinstance(vad.load(), SileroVad)


def test_a_wake_records_a_clip_the_real_vad_ends(tmp_path: Path) -> None:
    cfg = upload_cfg(tmp_path / "state", keep_local=True)
    audio = wake_stream(10.0, at_s=0.5, request="what is the time")
    device = build(cfg, ArraySource(audio))
    device.daemon.run(install_signals=False)
    stats = device.daemon.recorder.stats
    assert stats.detections == 1 and stats.clips == 1
    assert stats.by_reason == {"silence": 1}  # the VAD heard the request end
