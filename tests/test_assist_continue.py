"""Continue-conversation: when Home Assistant's intent end says ``continue_conversation``, the
microphone reopens once the answer has played, for one turn with no wake word (a new
``VoiceAssistantRequest`` with none, in the same conversation), recorded in the ledger and
the activation log as a follow-up; an announcement with ``start_conversation`` does the
same once it has played."""

from __future__ import annotations

import asyncio

import numpy as np
from aioesphomeapi import VoiceAssistantEventType

from edge.activations.store import ActivationLog, db_path
from edge.audio import synth
from edge.audio.frames import FRAME_S, FRAME_SAMPLES
from edge.audio.wav import encode_wav
from edge.pipeline.events import DetectionEvent, RecordingStarted
from edge.pipeline.recorder import FOLLOW_UP
from tests.assist_helpers import Satellite, until, wake_stream
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import ScriptedSource
from tests.test_assist_announce import media
from tests.test_assist_esphome import HomeAssistant, RoomSpeaker, make_satellite, voice_subscribed

__all__ = ["make_satellite", "media"]  # the fixtures

Event = VoiceAssistantEventType
MORE = "and the bedroom too"


def follow_up_says(source: ScriptedSource, ha: HomeAssistant) -> asyncio.Task[None]:
    """The person answers as soon as the device asks again (a request after ``asked``)."""
    asked = len(ha.starts)

    async def watch() -> None:
        await until(lambda: len(ha.starts) > asked, "the device to listen again")
        source.inject(synth.concat([synth.silence(0.3), phrase(MORE)]))

    return asyncio.get_running_loop().create_task(watch())


def activations(sat: Satellite) -> list[dict[str, object]]:
    sat.stop()  # the activation log writes its last rows as the daemon closes
    with ActivationLog.open(db_path(sat.cfg), create=False) as store:
        return store.rows()


def test_continue_conversation_listens_again_without_a_wake_word(make_satellite):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    speaker = RoomSpeaker(source)
    sat = make_satellite(source, speaker=speaker)
    answer = synth.concat([phrase("which room"), synth.silence(0.1)])

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat)
        sat.run()
        await until(lambda: ha.stops, "the end of the first turn")
        first_audio = len(ha.audio)
        send = ha.client.send_voice_assistant_event
        send(Event.VOICE_ASSISTANT_INTENT_END, {"conversation_id": "conv-1",
                                                "continue_conversation": "1"})
        send(Event.VOICE_ASSISTANT_TTS_STREAM_START, {})
        for start in range(0, len(answer), 512):
            ha.client.send_voice_assistant_audio(answer[start:start + 512].tobytes())
        send(Event.VOICE_ASSISTANT_RUN_END, {})
        send(Event.VOICE_ASSISTANT_TTS_STREAM_END, {})
        said = follow_up_says(source, ha)
        await until(lambda: len(ha.stops) == 2, "the end of the follow-up turn")
        await said
        await ha.client.disconnect()
        ha.audio[:] = ha.audio[first_audio:]  # keep only the follow-up's
        return ha

    ha = asyncio.run(home_assistant())
    assert ha.finished and ha.finished[0].success  # the answer played first
    (_, _, wake), (conversation, _, again) = ha.starts
    assert wake == "Hey Jarvis"
    assert again in (None, "") and conversation == "conv-1"  # no wake word, same conversation
    # what the person said after the device reopened the microphone reached the client
    heard, more = ha.samples, phrase(MORE)
    assert any(np.array_equal(heard[i:i + len(more)], more)
               for i in range(0, len(heard) - len(more) + 1, FRAME_SAMPLES // 16))
    assert sat.device.daemon.bus.flush()
    assert len([e for e in sat.events.of(DetectionEvent) if not e.ignored]) == 1
    assert [e.model for e in sat.events.of(RecordingStarted)] == ["hey_jarvis", FOLLOW_UP]
    entries = sat.ledger()
    assert [e["result"] for e in entries] == ["sending", "delivered", "sending", "delivered"]
    assert "follow-up" in entries[2]["note"] and "no wake word" in entries[2]["note"]
    rows = activations(sat)
    assert [(r["model"], r["outcome"]) for r in rows] == [("hey_jarvis", "streamed"),
                                                           (FOLLOW_UP, "streamed")]


def test_an_announcement_that_starts_a_conversation_listens_once_it_has_played(
        make_satellite, media):
    base, files = media
    source = ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S)
    speaker = RoomSpeaker(source)
    sat = make_satellite(source, speaker=speaker)
    question = phrase("shall I turn off the lights")
    files["/tts/question.wav"] = encode_wav(question, 16000)

    async def home_assistant() -> tuple[HomeAssistant, int]:
        ha = await voice_subscribed(sat)
        info = await ha.client.device_info()
        assert ha.client.api_version is not None
        flags = info.voice_assistant_feature_flags_compat(ha.client.api_version)
        sat.run()
        done = await ha.client.send_voice_assistant_announcement_await_response(
            f"{base}/tts/question.wav", 60.0, text="Shall I turn off the lights?",
            start_conversation=True)
        assert done.success
        said = follow_up_says(source, ha)
        await until(lambda: ha.stops, "the end of the follow-up turn")
        await said
        await ha.client.disconnect()
        return ha, flags

    ha, flags = asyncio.run(home_assistant())
    assert flags & 32  # it offers start-conversation
    [(_, _, wake)] = ha.starts
    assert wake in (None, "")
    assert np.array_equal(np.concatenate(speaker.played), question)
    entries = sat.ledger()
    assert [e["result"] for e in entries] == ["sending", "delivered"]
