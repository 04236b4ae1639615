"""The lights during a conversation with Home Assistant: the recording light while the
utterance streams, then thinking, replying while the answer plays, and listening again;
an assistant's error shows for a while. The looks are the hardware plugin's own history."""

from __future__ import annotations

import asyncio

from aioesphomeapi import VoiceAssistantEventType

from edge.audio.frames import FRAME_S
from edge.hardware.indicators import Look
from tests.assist_helpers import MUTE_PIN, Satellite, until, wake_stream
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import ScriptedSource
from tests.test_assist_esphome import HomeAssistant, RoomSpeaker, make_satellite, voice_subscribed
from tests.waiting import wait_for

__all__ = ["make_satellite"]  # the fixture

Event = VoiceAssistantEventType


def looks_after_turn(sat: Satellite) -> list[Look]:
    """The looks from the recording light on (before it: the device starting)."""
    looks = sat.device.hardware.looks
    return looks[looks.index(Look.RECORDING):]


async def turn(sat: Satellite) -> HomeAssistant:
    ha = await voice_subscribed(sat)
    sat.run()
    await until(lambda: ha.stops, "the end of the turn")
    await until(lambda: sat.device.hardware.look is Look.THINKING, "the thinking look")
    return ha


def test_a_conversation_shows_recording_thinking_replying_then_listening(make_satellite,
                                                                         factory):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_satellite(source, factory, speaker=RoomSpeaker(source))
    factory.pin(MUTE_PIN).drive_low()  # the switch on listen
    answer = phrase("the kitchen light is on")

    async def home_assistant() -> None:
        ha = await turn(sat)
        ha.client.send_voice_assistant_event(Event.VOICE_ASSISTANT_INTENT_END, {})
        ha.client.send_voice_assistant_event(Event.VOICE_ASSISTANT_TTS_STREAM_START, {})
        await until(lambda: sat.device.hardware.look is Look.REPLYING, "the replying look")
        for start in range(0, len(answer), 512):
            ha.client.send_voice_assistant_audio(answer[start:start + 512].tobytes())
        ha.client.send_voice_assistant_event(Event.VOICE_ASSISTANT_TTS_STREAM_END, {})
        ha.client.send_voice_assistant_event(Event.VOICE_ASSISTANT_RUN_END, {})
        await until(lambda: ha.finished, "the answer to have played")
        await ha.client.disconnect()

    asyncio.run(home_assistant())
    wait_for(lambda: sat.device.hardware.look is Look.LISTENING, what="the listening look")
    assert looks_after_turn(sat) == [Look.RECORDING, Look.THINKING, Look.REPLYING,
                                     Look.LISTENING]


def test_an_error_from_the_assistant_shows_then_the_device_listens_again(make_satellite,
                                                                         factory):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_satellite(source, factory)
    factory.pin(MUTE_PIN).drive_low()

    async def home_assistant() -> None:
        ha = await turn(sat)
        ha.client.send_voice_assistant_event(
            Event.VOICE_ASSISTANT_ERROR, {"code": "stt-no-text-recognized", "message": "-"})
        ha.client.send_voice_assistant_event(Event.VOICE_ASSISTANT_RUN_END, {})
        await until(lambda: sat.device.hardware.look is Look.ERROR, "the error look")
        await ha.client.disconnect()

    asyncio.run(home_assistant())
    wait_for(lambda: sat.device.hardware.look is Look.LISTENING, what="the listening look")
    assert looks_after_turn(sat) == [Look.RECORDING, Look.THINKING, Look.ERROR, Look.LISTENING]


def test_a_wake_with_no_answer_coming_goes_back_to_listening(make_satellite, factory):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_satellite(source, factory)
    factory.pin(MUTE_PIN).drive_low()

    async def home_assistant() -> None:
        ha = await turn(sat)
        ha.client.send_voice_assistant_event(Event.VOICE_ASSISTANT_RUN_END, {})
        await until(lambda: sat.device.hardware.look is Look.LISTENING, "the listening look")
        await ha.client.disconnect()

    asyncio.run(home_assistant())
    assert looks_after_turn(sat) == [Look.RECORDING, Look.THINKING, Look.LISTENING]
