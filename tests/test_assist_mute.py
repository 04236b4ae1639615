"""Home Assistant's mute switch entity, with the owner's opt-in ``assist.allow_remote_unmute``:
it may clear a soft mute, never the hardware switch (the rule MQTT's unmute follows)."""

from __future__ import annotations

import asyncio

from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.pipeline.events import UnmuteRefused
from tests.assist_helpers import MUTE_PIN
from tests.fixtures.hardware import ScriptedSource
from tests.test_assist_esphome import make_satellite, mute_then_unmute

__all__ = ["make_satellite"]  # the fixture


def silence() -> ScriptedSource:
    return ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S)


def test_with_the_opt_in_home_assistant_clears_a_soft_mute(make_satellite, factory):
    sat = make_satellite(silence(), factory, allow_remote_unmute=True)
    factory.pin(MUTE_PIN).drive_low()  # the switch on listen
    states: list[bool] = []
    asyncio.run(mute_then_unmute(sat, states))
    assert states[0] is False and states[1] is True
    assert states[-1] is False  # listening again, and the entity says so
    assert sat.device.hardware.mute.causes == set()
    assert not sat.events.of(UnmuteRefused)


def test_the_opt_in_never_clears_the_hardware_switch(make_satellite, factory):
    sat = make_satellite(silence(), factory, allow_remote_unmute=True)
    factory.pin(MUTE_PIN).drive_high()  # the switch on mute
    states: list[bool] = []
    asyncio.run(mute_then_unmute(sat, states))
    assert all(states[1:])  # muted from the switch's first reading on
    assert sat.device.hardware.mute.causes == {"switch"}
    [refused] = sat.events.of(UnmuteRefused)
    assert refused.why == "still muted by switch"
