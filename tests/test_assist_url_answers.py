"""An answer Home Assistant names by URL (TTS end with ``url``, no stream): the device fetches
it, plays it, and says it has played; an answer that also streams plays once, from the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
from aioesphomeapi import VoiceAssistantEventType

from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.audio.wav import encode_wav
from edge.pipeline.events import DetectionEvent
from tests.assist_helpers import Satellite, until, wake_stream
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import ScriptedSource
from tests.test_assist_announce import media
from tests.test_assist_esphome import HomeAssistant, RoomSpeaker, make_satellite, voice_subscribed
from tests.waiting import wait_for

__all__ = ["make_satellite", "media"]  # the fixtures

Event = VoiceAssistantEventType


def answer_sound() -> np.ndarray:
    return synth.concat([phrase("turned on the light"), synth.silence(0.1)])


def in_the_room(make_satellite: Callable[..., Satellite]) -> tuple[Satellite, RoomSpeaker]:
    """A satellite that hears a wake word, with a speaker in the room for its answers."""
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    speaker = RoomSpeaker(source)
    return make_satellite(source, speaker=speaker), speaker


def answer_at(files: dict[str, bytes]) -> np.ndarray:
    """The answer, served as ``/api/tts_proxy/answer.wav``."""
    answer = answer_sound()
    files["/api/tts_proxy/answer.wav"] = encode_wav(answer, 16000)
    return answer


async def after_the_turn(sat: Satellite) -> HomeAssistant:
    """Home Assistant, subscribed, once the device's turn has ended."""
    ha = await voice_subscribed(sat)
    sat.run()
    await until(lambda: ha.stops, "the end of the turn")
    return ha


def test_an_answer_by_url_is_fetched_played_and_reported(make_satellite, media):
    base, files = media
    sat, speaker = in_the_room(make_satellite)
    answer = answer_at(files)

    async def home_assistant() -> HomeAssistant:
        ha = await after_the_turn(sat)
        send = ha.client.send_voice_assistant_event
        send(Event.VOICE_ASSISTANT_INTENT_END, {"conversation_id": "c1",
                                                "continue_conversation": "0"})
        send(Event.VOICE_ASSISTANT_TTS_START, {"text": "Turned on the light"})
        send(Event.VOICE_ASSISTANT_TTS_END, {"url": f"{base}/api/tts_proxy/answer.wav"})
        send(Event.VOICE_ASSISTANT_RUN_END, {})
        await until(lambda: ha.finished, "the device to say the answer has played")
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert ha.finished[0].success
    assert np.array_equal(np.concatenate(speaker.played), answer)  # sample-exact
    assert (speaker.opened, speaker.closed_answers) == (1, 1)
    assert sat.device.daemon.bus.flush()
    # gated while it played: the device did not wake on its own answer
    assert len([e for e in sat.events.of(DetectionEvent) if not e.ignored]) == 1


def test_an_answer_that_streams_is_not_fetched_again(make_satellite, media):
    base, files = media
    sat, speaker = in_the_room(make_satellite)
    answer = answer_at(files)

    async def home_assistant() -> HomeAssistant:
        ha = await after_the_turn(sat)
        send = ha.client.send_voice_assistant_event
        # as Home Assistant does: the stream starts as the TTS end (with its URL) goes out
        send(Event.VOICE_ASSISTANT_TTS_STREAM_START, {})
        send(Event.VOICE_ASSISTANT_TTS_END, {"url": f"{base}/api/tts_proxy/answer.wav"})
        for start in range(0, len(answer), 512):
            ha.client.send_voice_assistant_audio(answer[start:start + 512].tobytes())
        send(Event.VOICE_ASSISTANT_RUN_END, {})
        send(Event.VOICE_ASSISTANT_TTS_STREAM_END, {})
        await until(lambda: ha.finished, "the device to say the answer has played")
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert len(ha.finished) == 1 and ha.finished[0].success
    # played once: had the URL been fetched too, the answer would have played twice
    assert np.array_equal(np.concatenate(speaker.played), answer)
    assert speaker.opened == 1
    wait_for(lambda: speaker.closed_answers == 1, what="the one answer to close")


def test_an_answer_url_that_cannot_be_fetched_reports_failure(make_satellite, media):
    base, _files = media
    sat, speaker = in_the_room(make_satellite)

    async def home_assistant() -> HomeAssistant:
        ha = await after_the_turn(sat)
        send = ha.client.send_voice_assistant_event
        send(Event.VOICE_ASSISTANT_TTS_END, {"url": f"{base}/api/tts_proxy/gone.wav"})
        send(Event.VOICE_ASSISTANT_RUN_END, {})
        await until(lambda: ha.finished, "the device to report the answer")
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert not ha.finished[0].success
    assert speaker.played == []
