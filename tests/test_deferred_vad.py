"""The daemon scores its first frame before it loads the VAD, and loads it right after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio import synth
from edge.audio.sources import ArraySource
from edge.wake.vad import DeferredVad, SileroVad, Vad
from tests.device import build
from tests.fakes import LevelVad
from tests.fixtures.wake import wake_stream
from tests.upload_helpers import upload_cfg


def test_a_deferred_vad_loads_once_when_first_asked() -> None:
    made: list[LevelVad] = []

    def loader() -> Vad:
        made.append(LevelVad())
        return made[-1]

    vad = DeferredVad(loader)
    vad.reset()  # nothing loaded yet: nothing to reset, nothing loaded for it
    assert made == [] and not vad.loaded
    frame = np.full(1280, 1000, dtype=np.int16)  # louder than LevelVad's level: speech
    assert vad.speech_probability(frame) == 1.0
    assert vad.speech_probability(frame) == 1.0
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
