"""Announcements and timers from Home Assistant: a sound named by URL is fetched from a
local HTTP server and played through the answer player, then ``AnnounceFinished``; a timer
that finishes rings the chime until the button, a wake word, or a minute."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from aioesphomeapi import VoiceAssistantTimerEventType

from edge.assist.media import MediaError, decode_audio
from edge.assist.session import FEATURE_ANNOUNCE, FEATURE_TIMERS
from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.audio.wav import encode_wav
from edge.hardware.plugin import RING_EVERY_S, RING_S
from edge.pipeline.events import CancelPressed, RecordingStarted
from tests.assist_helpers import MUTE_PIN, Satellite, assemble, until
from tests.fakes import FakeChime
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import ScriptedSource
from tests.test_assist_esphome import RoomSpeaker, config, connected, make_satellite
from tests.waiting import wait_for

__all__ = ["make_satellite"]  # the fixture

BUTTON_PIN = 17
TIMEOUT_S = 60.0


@pytest.fixture
def media() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on loopback (Home Assistant's media URLs): path -> bytes it serves."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()
    thread.join(10)


def paced_silence() -> ScriptedSource:
    return ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S)


def test_an_announcement_is_fetched_played_and_reported_finished(make_satellite, media):
    base, files = media
    source = paced_silence()
    speaker = RoomSpeaker(source)
    sat = make_satellite(source, speaker=speaker)
    chime, words = phrase("hey jarvis"), phrase("dinner is ready")
    files["/chime.wav"] = encode_wav(chime[:4000], 16000)
    files["/tts/announce.wav"] = encode_wav(words, 16000)

    async def home_assistant() -> tuple[int, Any]:
        client = await connected(sat, sat.key)
        info = await client.device_info()
        assert client.api_version is not None
        flags = info.voice_assistant_feature_flags_compat(client.api_version)
        sat.run()
        done = await client.send_voice_assistant_announcement_await_response(
            f"{base}/tts/announce.wav", TIMEOUT_S, text="Dinner is ready",
            preannounce_media_id=f"{base}/chime.wav")
        await client.disconnect()
        return flags, done

    flags, done = asyncio.run(home_assistant())
    assert flags & FEATURE_ANNOUNCE
    assert done.success
    # sample-exact: the chime it names, then the announcement, as one answer
    assert np.array_equal(np.concatenate(speaker.played), np.concatenate([chime[:4000], words]))
    assert (speaker.opened, speaker.closed_answers) == (1, 1)


def test_an_announcement_that_cannot_be_fetched_reports_failure(make_satellite, media):
    base, _files = media
    source = paced_silence()
    speaker = RoomSpeaker(source)
    sat = make_satellite(source, speaker=speaker)

    async def home_assistant() -> Any:
        client = await connected(sat, sat.key)
        done = await client.send_voice_assistant_announcement_await_response(
            f"{base}/missing.wav", TIMEOUT_S)
        await client.disconnect()
        return done

    assert not asyncio.run(home_assistant()).success
    assert speaker.played == []


def test_any_rate_and_channel_count_is_played_at_16_khz_mono(tmp_path: Path):
    stereo = np.stack([np.sin(np.arange(44100) * 2 * np.pi * 440 / 44100)] * 2, axis=1) * 0.5
    path = tmp_path / "a.flac"
    soundfile.write(path, stereo, 44100)
    samples = decode_audio(path.read_bytes(), "a.flac")
    assert samples.dtype == np.int16 and len(samples) == 16000
    assert 16000 * 0.49 < np.abs(samples).max() < 16384 * 1.01
    with pytest.raises(MediaError, match="not a sound file this device can decode"):
        decode_audio(b"<html>not found</html>", "http://ha/x.wav")


def ringing_satellite(tmp_path: Path, source: Any, factory: Any) -> Satellite:
    """With the generic-usb board's button (GPIO17) and chimes played on the audio thread."""
    return assemble(config(tmp_path), source, factory, chime_output=FakeChime(),
                    chime_background=False)


def timers(sat: Satellite) -> list[str]:
    chime = sat.device.hardware.parts.chime
    assert chime is not None
    return [k for k in chime.played if k == "timer"]


async def timer_finished(sat: Satellite) -> None:
    client = await connected(sat, sat.key)
    info = await client.device_info()
    assert client.api_version is not None
    flags = info.voice_assistant_feature_flags_compat(client.api_version)
    assert flags & FEATURE_TIMERS
    client.send_voice_assistant_timer_event(
        VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_FINISHED, "t1", "pasta", 600, 0,
        False)
    await until(lambda: len(timers(sat)) >= 2, "the bell to ring twice")
    await client.disconnect()


@pytest.fixture
def stop_after() -> Iterator[Callable[[Satellite], None]]:
    made: list[Satellite] = []
    yield made.append
    for sat in made:
        sat.stop()


def test_a_finished_timer_rings_until_the_button_is_pressed(tmp_path, factory, stop_after):
    sat = ringing_satellite(tmp_path, paced_silence(), factory)
    stop_after(sat)
    factory.pin(MUTE_PIN).drive_low()
    sat.run()
    asyncio.run(timer_finished(sat))
    factory.pin(BUTTON_PIN).drive_low()
    factory.pin(BUTTON_PIN).drive_high()
    wait_for(lambda: sat.device.hardware.ring_frames == 0, what="the bell to stop")
    assert not sat.events.of(CancelPressed)  # the press was for the bell


def test_a_wake_word_stops_the_bell(tmp_path, factory, stop_after):
    source = paced_silence()
    sat = ringing_satellite(tmp_path, source, factory)
    stop_after(sat)
    factory.pin(MUTE_PIN).drive_low()
    sat.run()
    asyncio.run(timer_finished(sat))
    # Said just after a chime: each chime gates detection for its length (the device must
    # not wake on its own sound), and the wake word ends after that gate, before the next.
    rung = len(timers(sat))
    wait_for(lambda: len(timers(sat)) > rung, what="the next chime")
    source.inject(phrase("hey jarvis"))
    wait_for(lambda: sat.events.of(RecordingStarted), what="the wake word")
    assert sat.device.hardware.ring_frames == 0


def test_the_bell_stops_by_itself_after_a_minute(tmp_path, factory, stop_after):
    source = ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S)
    sat = ringing_satellite(tmp_path, source, factory)
    stop_after(sat)
    factory.pin(MUTE_PIN).drive_low()
    sat.run()
    asyncio.run(timer_finished(sat))
    source.pace_s = 0.0  # a minute of audio, as fast as the loop takes it
    wait_for(lambda: sat.device.hardware.ring_frames == 0, what="the minute to pass")
    assert len(timers(sat)) == round(RING_S / RING_EVERY_S)
