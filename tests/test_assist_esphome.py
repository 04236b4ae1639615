"""The ESPHome satellite against the client Home Assistant itself uses (aioesphomeapi).

``APIClient`` plays Home Assistant: it connects with the Noise key, reads device info and
entities, subscribes to the voice assistant, and takes the turns the live daemon (built as
``edge run`` builds it) streams after an espeak-ng "hey jarvis".
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aioesphomeapi import (
    APIClient,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
    SensorInfo,
    SensorState,
    SwitchInfo,
    SwitchState,
    VoiceAssistantEventType,
)

from edge.assist.framing import REFUSE_PLAINTEXT
from edge.assist.keys import new_key
from edge.assist.naming import local_mac
from edge.audio import synth
from edge.audio.frames import FRAME_S, FRAME_SAMPLES
from edge.config import AssistConfig, Config, replace
from edge.errors import ConfigError
from edge.pipeline.events import DetectionEvent, MuteChanged, RecordingStopped, UnmuteRefused
from edge.pipeline.recorder import frames_for
from edge.privacy.ledger import read_ledger
from tests.assist_helpers import (
    DEVICE_ID,
    MUTE_PIN,
    Satellite,
    alsa_stream,
    assemble,
    assert_streamed_from_the_wake_word,
    listening,
    stopped_after,
    until,
    wake_stream,
)
from tests.device import build
from tests.fakes import HeldSource
from tests.fixtures.alsa import stop_edge_run
from tests.fixtures.audio import phrase, prose
from tests.fixtures.hardware import ScriptedSource
from tests.fixtures.mqtt import free_port
from tests.waiting import wait_for

NAME = "test-satellite"


def config(tmp_path: Path, **assist: Any) -> Config:
    return replace(Config(), state_dir=str(tmp_path / "state"),
                   assist=AssistConfig(**{"mode": "esphome", "host": "127.0.0.1",
                                          "port": free_port(), "name": NAME, **assist}))


def satellite(tmp_path: Path, source: Any = None, factory: Any = None, speaker: Any = None,
              **assist: Any) -> Satellite:
    """The daemon with assist on (``tests.assist_helpers.assemble``)."""
    return assemble(config(tmp_path, **assist), source, factory, speaker)


@pytest.fixture
def make_satellite(tmp_path):  # type: ignore[no-untyped-def]
    """``make_satellite(source, factory, speaker, **assist)``: ``satellite``, stopped after."""
    yield from stopped_after(lambda *args, **kwargs: satellite(tmp_path, *args, **kwargs))


@dataclass
class HomeAssistant:
    """What the client heard, as Home Assistant's esphome integration would hear it."""

    client: APIClient
    starts: list[tuple[str, int, str | None]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    stops: list[bool] = field(default_factory=list)
    audio_after_stop: int = 0
    on_audio: Callable[[HomeAssistant], None] | None = None
    port: int | None = 0
    """What ``handle_start`` answers: 0 takes the audio over the API; None refuses the turn."""
    finished: list[Any] = field(default_factory=list)
    """The device's word that an answer has played."""

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.audio), dtype="<i2")

    def subscribe(self) -> None:
        async def start(conversation_id: str, flags: int, settings: Any,
                        wake_word: str | None) -> int:
            self.starts.append((conversation_id, flags, wake_word))
            return self.port

        async def stop(abort: bool) -> None:
            self.stops.append(abort)

        async def audio(data: bytes, _data2: bytes | None) -> None:
            if self.stops:
                self.audio_after_stop += 1
            self.audio.append(data)
            if self.on_audio is not None:
                self.on_audio(self)

        async def played(finished: Any) -> None:
            self.finished.append(finished)

        self.client.subscribe_voice_assistant(handle_start=start, handle_stop=stop,
                                              handle_audio=audio,
                                              handle_announcement_finished=played)


def switch_states(into: list[Any], value: bool = False) -> Callable[[Any], None]:
    """A ``subscribe_states`` callback keeping the mute switch's states (``value``: only
    the state) out of every entity's."""
    def keep(state: Any) -> None:
        if isinstance(state, SwitchState):
            into.append(state.state if value else state)

    return keep


async def mute_then_unmute(sat: Satellite, states: list[bool]) -> None:
    """Home Assistant turns the mute switch on, then off; ``states`` is what it is told."""
    client = await connected(sat, sat.key)
    entities, _ = await client.list_entities_services()
    [mute] = [e for e in entities if isinstance(e, SwitchInfo)]
    client.subscribe_states(switch_states(states, value=True))
    sat.run()
    await until(lambda: states, "the first state")
    client.switch_command(mute.key, True)
    await until(lambda: states[-1] is True, "the mute to take hold")
    client.switch_command(mute.key, False)
    await until(lambda: len(states) >= 3, "the answer to the unmute")
    await until(lambda: sat.device.hardware.mute.causes != {"soft"} or
                sat.events.of(UnmuteRefused), "the unmute to be decided")
    await client.device_info()  # a state sent after the decision arrives by now
    await client.disconnect()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


async def connected(sat: Satellite, key: str | None) -> APIClient:
    client = APIClient("127.0.0.1", sat.port, None, noise_psk=key, client_info="edge tests")
    await client.connect(login=True)
    return client


async def voice_subscribed(sat: Satellite, on_audio: Any = None,
                           port: int | None = 0) -> HomeAssistant:
    ha = HomeAssistant(await connected(sat, sat.key), on_audio=on_audio, port=port)
    ha.subscribe()
    assert sat.device.assist is not None
    await until(sat.device.assist.server.destination, "the voice subscription to arrive")
    return ha


def events(sat: Satellite, kind: type) -> list[Any]:
    """The events of ``kind`` the bus delivered (on its own thread), waiting for the first."""
    return wait_for(lambda: sat.events.of(kind), what=f"a {kind.__name__} event")


def pre_roll_start(sat: Satellite) -> int:
    """The first sample the turn must carry: the pre-roll's start, from the detection."""
    [det] = [e for e in events(sat, DetectionEvent) if not e.ignored]
    return (det.detection.frame_index + 1 - frames_for(sat.cfg.audio.pre_roll_s)) * FRAME_SAMPLES


def test_assist_is_off_by_default_and_opens_no_socket(tmp_path):
    cfg = replace(Config(), state_dir=str(tmp_path / "state"))
    assert cfg.assist.mode == "off"
    device = build(cfg, HeldSource(synth.silence(1.0)))
    try:
        assert device.assist is None
        with socket.socket() as s:  # nothing listens on ESPHome's port
            assert s.connect_ex(("127.0.0.1", cfg.assist.port)) != 0
    finally:
        device.daemon.close()


def test_encrypted_client_reads_device_info_and_the_mute_switch(make_satellite):
    sat = make_satellite()

    async def home_assistant() -> None:
        client = await connected(sat, sat.key)
        info = await client.device_info()
        entities, _services = await client.list_entities_services()
        states: list[Any] = []
        client.subscribe_states(states.append)
        await until(lambda: len(states) == 2, "the mute switch's and the sensor's states")
        flags = info.voice_assistant_feature_flags_compat(client.api_version)
        await client.disconnect()
        assert info.name == NAME
        assert info.mac_address == local_mac(DEVICE_ID)  # derived, locally administered
        assert int(info.mac_address[:2], 16) & 0x03 == 0x02
        assert flags & 0b101 == 0b101  # voice assistant, audio over the API
        mute, false_wakes = entities
        assert isinstance(mute, SwitchInfo) and isinstance(false_wakes, SensorInfo)
        assert (mute.object_id, mute.name) == ("mute", "Mute")
        assert (false_wakes.object_id, false_wakes.name) == ("false_wakes_today",
                                                              "False wakes today")
        assert isinstance(states[0], SwitchState)
        assert states[0].key == mute.key and states[0].state is False
        assert isinstance(states[1], SensorState)
        assert states[1].key == false_wakes.key and states[1].state == 0.0

    run(home_assistant)


def test_a_wrong_key_is_refused(make_satellite):
    sat = make_satellite()

    async def intruder() -> None:
        with pytest.raises(InvalidEncryptionKeyAPIError):
            await connected(sat, new_key())

    run(intruder)
    assert sat.device.assist is not None
    wait_for(lambda: not sat.device.assist.server.sessions, what="the connection to be closed")


def test_plaintext_is_refused_unless_allowed(make_satellite, tmp_path):
    sat = make_satellite()

    async def plaintext(port: int) -> str:
        client = APIClient("127.0.0.1", port, None, client_info="edge tests")
        await client.connect(login=True)
        info = await client.device_info()
        await client.disconnect()
        return str(info.name)

    async def refused() -> None:
        with pytest.raises(RequiresEncryptionAPIError):
            await plaintext(sat.port)

    run(refused)

    lax = satellite(tmp_path / "lax", HeldSource(synth.silence(1.0)), allow_unencrypted=True)
    try:
        assert asyncio.run(plaintext(lax.port)) == NAME

        async def encrypted_still_works() -> None:
            client = await connected(lax, lax.key)
            assert (await client.device_info()).name == NAME
            await client.disconnect()

        run(encrypted_still_works)
    finally:
        lax.stop()


def test_a_wake_word_streams_the_pre_roll_and_the_request_sample_exact(make_satellite):
    sat = make_satellite()
    stream = wake_stream()

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat)
        sat.run()
        await until(lambda: ha.stops, "the end of the turn")
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    [(conversation, flags, wake_word)] = ha.starts
    assert wake_word == "Hey Jarvis"
    assert ha.stops == [False]  # our VAD ended it: Home Assistant is to answer, not drop it
    assert ha.audio_after_stop == 0
    start = pre_roll_start(sat)
    heard = ha.samples
    assert len(heard) > frames_for(sat.cfg.audio.pre_roll_s) * FRAME_SAMPLES + 16000
    assert np.array_equal(heard, stream[start:start + len(heard)])
    assert {len(chunk) for chunk in ha.audio} == {FRAME_SAMPLES * 2}
    [stopped] = events(sat, RecordingStopped)
    assert stopped.reason == "silence"
    # the turn is the recording: it ends on the frame our VAD ended the recording on
    assert start + len(heard) == round(stopped.t / FRAME_S) * FRAME_SAMPLES
    sending, delivered = sat.ledger()
    assert sending["result"] == "sending" and sending["destination"].startswith("esphome://")
    assert delivered["result"] == "delivered" and delivered["bytes"] == len(heard) * 2
    assert "ended by vad" in delivered["note"]


def test_vad_end_from_the_assistant_ends_the_stream(make_satellite):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_satellite(source)
    pre_roll = frames_for(sat.cfg.audio.pre_roll_s)
    marks: dict[str, int] = {}

    def vad_end_after_five_live_frames(ha: HomeAssistant) -> None:
        if len(ha.audio) == pre_roll + 5 and "sent" not in marks:
            marks["sent"] = len(ha.audio)
            ha.client.send_voice_assistant_event(
                VoiceAssistantEventType.VOICE_ASSISTANT_STT_VAD_END, None)

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat, vad_end_after_five_live_frames)
        sat.run()
        await until(lambda: "sent" in marks, "five live frames")
        # A request after the VAD end: the device answers it after taking the VAD end, on the
        # same connection, so any audio sent after the VAD end would arrive before the answer.
        await ha.client.device_info()
        marks["answered"] = len(ha.audio)
        await until(lambda: sat.events.of(RecordingStopped), "the recording to end")
        await ha.client.device_info()
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert len(ha.audio) == marks["answered"]  # nothing after the device took the VAD end
    assert ha.stops == []  # the assistant ended it: no end or stop is sent back
    start = pre_roll_start(sat)
    assert np.array_equal(ha.samples, wake_stream()[start:start + len(ha.samples)])
    entries = sat.ledger()
    assert [e["result"] for e in entries] == ["sending", "delivered"]
    assert "ended by assistant" in entries[1]["note"]
    [stopped] = events(sat, RecordingStopped)
    assert stopped.reason == "silence"  # the recorder kept its usual accounting


def test_a_mute_during_a_turn_stops_the_stream_before_the_next_frame(make_satellite, factory):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_satellite(source, factory)
    pre_roll = frames_for(sat.cfg.audio.pre_roll_s)
    factory.pin(MUTE_PIN).drive_low()  # the switch on listen

    def mute_after_three_live_frames(ha: HomeAssistant) -> None:
        if len(ha.audio) == pre_roll + 3:
            factory.pin(MUTE_PIN).drive_high()

    async def home_assistant() -> tuple[HomeAssistant, list[Any]]:
        ha = await voice_subscribed(sat, mute_after_three_live_frames)
        states: list[Any] = []
        ha.client.subscribe_states(switch_states(states))
        sat.run()
        await until(lambda: ha.stops, "the turn to be aborted")
        await until(lambda: any(s.state for s in states), "the mute switch entity to follow")
        await ha.client.device_info()  # anything sent after the abort would arrive by now
        await ha.client.disconnect()
        return ha, states

    ha, states = asyncio.run(home_assistant())
    assert ha.stops == [True]  # aborted: Home Assistant drops the utterance
    assert ha.audio_after_stop == 0
    [muted] = wait_for(lambda: [e for e in sat.events.of(MuteChanged) if e.muted],
                       what="the mute event")
    start = pre_roll_start(sat)
    heard = ha.samples
    # nothing captured after the mute edge: at most the frames fed before the mute took hold
    assert start + len(heard) <= round(muted.t / FRAME_S) * FRAME_SAMPLES
    stream = wake_stream()
    assert np.array_equal(heard, stream[start:start + len(heard)]) or \
        not heard[-FRAME_SAMPLES:].any()  # a frame in flight at the edge is silenced
    sending, delivered = sat.ledger()
    assert "ended by mute" in delivered["note"] and delivered["bytes"] == len(heard) * 2
    assert [s.state for s in states][0] is False and states[-1].state is True


def test_home_assistant_may_mute_but_not_unmute(make_satellite, factory):
    sat = make_satellite(ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S),
                         factory)
    factory.pin(MUTE_PIN).drive_low()

    states: list[bool] = []
    asyncio.run(mute_then_unmute(sat, states))
    assert states[0] is False and states[1] is True
    assert all(states[1:])  # the unmute was refused: still muted
    assert sat.device.hardware.mute.causes == {"soft"}


def test_no_turn_streams_without_a_subscribed_client(make_satellite):
    sat = make_satellite()
    sat.run()
    wait_for(lambda: sat.events.of(RecordingStopped), what="the recording to end")
    assert sat.device.assist is not None
    assert sat.device.assist.handoff.stats.not_ready == 1
    assert sat.ledger() == []


def test_home_assistant_can_discover_the_device_over_mdns(make_satellite):
    from zeroconf import IPVersion, Zeroconf

    name = f"esphome-test-{os.getpid()}"  # unique: other test runs may announce at once
    sat = make_satellite(HeldSource(synth.silence(1.0)), name=name)
    browser = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = browser.get_service_info("_esphomelib._tcp.local.",
                                        f"{name}._esphomelib._tcp.local.", timeout=30000)
    finally:
        browser.close()
    assert info is not None, "the device was not announced"
    assert info.port == sat.port and info.parsed_addresses() == ["127.0.0.1"]
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    assert props["mac"] == local_mac(DEVICE_ID).replace(":", "").lower()
    assert props["api_encryption"] == "Noise_NNpsk0_25519_ChaChaPoly_SHA256"


def test_a_port_in_use_is_one_line_naming_the_key(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"assist.port = {port} on assist.host = "
                                              r"'127.0.0.1' cannot be listened on.*free port"):
            satellite(tmp_path, HeldSource(synth.silence(1.0)), port=port)


def test_a_silent_or_garbled_peer_is_dropped_and_the_api_serves_on(make_satellite):
    sat = make_satellite(HeldSource(synth.silence(1.0)))
    with socket.create_connection(("127.0.0.1", sat.port)) as garbled:
        garbled.sendall(b"\x07garbage")
        assert garbled.recv(100) in (b"", REFUSE_PLAINTEXT)  # refused, then closed

    async def still_serves() -> None:
        client = await connected(sat, sat.key)
        assert (await client.device_info()).name == NAME
        await client.disconnect()

    run(still_serves)


def test_ten_minutes_of_prose_without_a_wake_word_send_nothing(make_satellite):
    talk = prose(600.0, seed=11)
    sat = make_satellite(HeldSource(talk))
    frames = -(-len(talk) // FRAME_SAMPLES)

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat)
        sat.run()
        await until(lambda: sat.device.daemon.recorder.frame_index >= frames,
                    "the ten minutes to be heard", timeout=600)
        await ha.client.device_info()  # anything sent before this answer has arrived
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert ha.starts == [] and ha.audio == [] and ha.stops == []
    assert sat.device.daemon.bus.flush()
    assert sat.events.of(DetectionEvent) == []
    assert sat.ledger() == []


@pytest.mark.parametrize("port", [None, 12345])  # no pipeline; UDP audio, which we never send
def test_a_turn_the_assistant_refuses_sends_no_audio(make_satellite, port):
    sat = make_satellite()

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat, port=port)
        sat.run()
        await until(lambda: ha.stops, "the refused turn to be stopped")
        await until(lambda: len(sat.ledger()) == 2, "the turn's ledger entry")
        await ha.client.device_info()
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert len(ha.starts) == 1 and ha.audio == [] and ha.stops == [True]
    sending, failed = sat.ledger()
    assert (failed["result"], failed["bytes"], failed["error"]) == \
        ("failed", 0, "the assistant refused the turn")


class RoomSpeaker:
    """A speaker in the room: it plays in real time, and the microphone hears what it plays."""

    def __init__(self, source: ScriptedSource) -> None:
        self.source = source
        self.played: list[np.ndarray] = []
        self.opened = self.closed_answers = 0

    def begin(self) -> None:
        self.opened += 1

    def write(self, samples: np.ndarray) -> None:
        self.source.inject(samples)
        self.played.append(samples.copy())
        threading.Event().wait(len(samples) / 16000)  # playing takes as long as the sound

    def end(self) -> None:
        self.closed_answers += 1

    def close(self) -> None:
        pass


def test_the_answer_plays_and_the_device_does_not_wake_on_it(make_satellite):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    speaker = RoomSpeaker(source)
    sat = make_satellite(source, speaker=speaker)
    answer = synth.concat([phrase("hey jarvis"), synth.silence(0.2),
                           phrase("the kitchen light is on")])

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat)
        sat.run()
        await until(lambda: ha.stops, "the end of the turn")
        flags = (await ha.client.device_info()).voice_assistant_feature_flags_compat(
            ha.client.api_version)
        assert flags & 0b10  # it offers a speaker: HA streams the answer over the API
        ha.client.send_voice_assistant_event(
            VoiceAssistantEventType.VOICE_ASSISTANT_TTS_STREAM_START, {})
        for start in range(0, len(answer), 512):
            ha.client.send_voice_assistant_audio(answer[start:start + 512].tobytes())
        ha.client.send_voice_assistant_event(
            VoiceAssistantEventType.VOICE_ASSISTANT_TTS_STREAM_END, {})
        await until(lambda: ha.finished, "the device to say the answer has played")
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    assert np.array_equal(np.concatenate(speaker.played), answer)
    assert (speaker.opened, speaker.closed_answers) == (1, 1) and ha.finished[0].success
    assert sat.device.daemon.bus.flush()
    assert len([e for e in sat.events.of(DetectionEvent) if not e.ignored]) == 1
    # the control: the same words from a person in the room (not gated) do wake it
    source.inject(phrase("hey jarvis"))
    wait_for(lambda: len([e for e in sat.events.of(DetectionEvent) if not e.ignored]) == 2,
             what="a person's wake word after the answer")


def test_edge_run_on_an_alsa_microphone_hands_the_turn_to_home_assistant(alsa, tmp_path):
    """The whole device as a person runs it: `edge assist key`, then `edge run` on a real ALSA
    capture device (the file plugin, at a microphone's pace), and the client playing HA."""
    import subprocess
    import sys

    stream = alsa_stream()
    alsa.add("usbmic", stream)
    port = free_port()
    conf = tmp_path / "edge.toml"
    conf.write_text(f'state_dir = "{tmp_path / "state"}"\n[audio]\nrate = 16000\n'
                    'output = "none"\n'
                    f'[assist]\nmode = "esphome"\nhost = "127.0.0.1"\nport = {port}\n'
                    f'name = "{NAME}"\n')
    edge = [sys.executable, "-m", "edge"]
    key = subprocess.run([*edge, "assist", "key", "--config", str(conf)], env=alsa.env,
                         capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    proc = subprocess.Popen([*edge, "run", "--config", str(conf), "--input", "usbmic",
                             "--realtime"], stderr=subprocess.PIPE, text=True, env=alsa.env)

    async def home_assistant() -> HomeAssistant:
        await until(lambda: listening(proc, port), "`edge run` to listen", timeout=120)
        client = APIClient("127.0.0.1", port, None, noise_psk=key, client_info="edge tests")
        await client.connect(login=True)
        ha = HomeAssistant(client)
        ha.subscribe()
        await until(lambda: ha.stops, "the turn to end", timeout=120)
        await client.disconnect()
        return ha

    try:
        ha = asyncio.run(home_assistant())
        stop_edge_run(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [s[2] for s in ha.starts] == ["Hey Jarvis"] and ha.stops == [False]
    heard = ha.samples
    # the audio is the microphone's, from a frame boundary before the wake word on
    assert_streamed_from_the_wake_word(stream, heard)
    assert len(heard) >= frames_for(Config().audio.pre_roll_s) * FRAME_SAMPLES
    entries = read_ledger(tmp_path / "state" / "ledger.jsonl").entries
    assert [e["result"] for e in entries] == ["sending", "delivered"]
    assert entries[1]["bytes"] == len(heard) * 2
