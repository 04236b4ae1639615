"""Home Assistant's wake-word select: every installed model is offered (both families), and
a choice changes what the running device listens for; an unknown id changes nothing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource
from edge.pipeline.events import DetectionEvent, ThresholdChanged
from edge.wake.detector import model_store
from edge.wake.models import ModelStore
from tests.assist_helpers import Satellite, until
from tests.fixtures.audio import phrase
from tests.test_assist_esphome import connected, make_satellite
from tests.waiting import wait_for

__all__ = ["make_satellite"]  # the fixture

TIMEOUT_S = 30.0


class GatedSource(ArraySource):
    """Quiet frames until ``go`` is set, then ``samples``, then quiet frames until closed."""

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__(samples, name="gated")
        self.go = threading.Event()
        self.quiet = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def read(self) -> np.ndarray | None:
        if not self.go.wait(0.08):
            return self.quiet
        frame = super().read()
        if frame is None:
            self.go.wait(0.08)  # paced, as a microphone
            return self.quiet
        return frame


def installed_wake_words(store: ModelStore) -> list[str]:
    m = store.manifest
    return [n for n in m.names() if m.entry(n).kind in ("wakeword", "micro")
            and store.status(n).state == "ok"]


def recorder_models(sat: Satellite) -> tuple[str, ...]:
    return tuple(sat.device.daemon.recorder.policy.thresholds)


def test_every_installed_model_is_offered_and_a_choice_changes_what_wakes_it(make_satellite):
    source = GatedSource(synth.concat([synth.silence(0.5), phrase("okay nabu"),
                                       synth.silence(1.5)]))
    sat = make_satellite(source)
    installed = installed_wake_words(model_store(sat.cfg.wake))
    assert "hey_jarvis" in installed and "micro:okay_nabu" in installed  # both families

    async def home_assistant() -> tuple[object, object, list[str]]:
        client = await connected(sat, sat.key)
        sat.run()
        before = await client.get_voice_assistant_configuration(TIMEOUT_S)
        await client.set_voice_assistant_configuration(["micro:okay_nabu"])
        await until(lambda: recorder_models(sat) == ("micro:okay_nabu",), "the new wake word")
        after = await client.get_voice_assistant_configuration(TIMEOUT_S)
        source.go.set()
        await until(lambda: sat.events.of(DetectionEvent), "a wake on the new word")
        await client.disconnect()
        return before, after, [d.detection.model for d in sat.events.of(DetectionEvent)]

    before, after, woke_on = asyncio.run(home_assistant())
    offered = [(w.id, w.wake_word) for w in before.available_wake_words]  # type: ignore[attr-defined]
    assert [i for i, _ in offered] == installed
    assert ("micro:okay_nabu", "Okay Nabu") in offered and ("hey_jarvis", "Hey Jarvis") in offered
    assert before.active_wake_words == ["hey_jarvis"]  # type: ignore[attr-defined]
    assert before.max_active_wake_words == 1  # type: ignore[attr-defined]
    assert after.active_wake_words == ["micro:okay_nabu"]  # type: ignore[attr-defined]
    assert woke_on == ["micro:okay_nabu"]
    # the activation log and MQTT hear of the new models as of any threshold change
    changed = wait_for(lambda: sat.events.of(ThresholdChanged), what="the change event")
    assert list(changed[-1].thresholds) == ["micro:okay_nabu"]


def test_an_unknown_wake_word_is_refused_and_nothing_changes(make_satellite, caplog):
    sat = make_satellite()

    async def home_assistant() -> object:
        client = await connected(sat, sat.key)
        await client.set_voice_assistant_configuration(["micro:hey_siri"])
        await until(lambda: "refused" in caplog.text, "the refusal")
        config = await client.get_voice_assistant_configuration(TIMEOUT_S)
        await client.disconnect()
        return config

    config = asyncio.run(home_assistant())
    assert config.active_wake_words == ["hey_jarvis"]  # type: ignore[attr-defined]
    assert "not installed here: 'micro:hey_siri'" in caplog.text
    assert recorder_models(sat) == ("hey_jarvis",)
    assert not sat.events.of(ThresholdChanged)
