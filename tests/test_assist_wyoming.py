"""The Wyoming satellite against the ``wyoming`` package's own client, playing Home Assistant.

``AsyncTcpClient`` connects to the live daemon (built as ``edge run`` builds it, with
``assist.mode = "wyoming"``), asks describe, says run-satellite and takes the turns the
device streams after an espeak-ng "hey jarvis"; it answers with audio the device plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.pipeline import RunPipeline
from wyoming.satellite import PauseSatellite, RunSatellite
from wyoming.snd import Played
from wyoming.wake import Detection

from edge.audio import synth
from edge.audio.frames import FRAME_S, FRAME_SAMPLES
from edge.config import AssistConfig, AudioConfig, Config, WyomingConfig, replace
from edge.errors import ConfigError
from edge.pipeline.events import DetectionEvent, MuteChanged, RecordingStopped
from edge.pipeline.recorder import frames_for
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
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import ScriptedSource
from tests.fixtures.mqtt import free_port
from tests.test_assist_esphome import RoomSpeaker, events, pre_roll_start
from tests.waiting import wait_for

NAME = "kitchen-satellite"


def satellite(tmp_path: Path, source: Any = None, factory: Any = None, speaker: Any = None,
              **wyoming: Any) -> Satellite:
    """The daemon as a Wyoming satellite on a free loopback port."""
    remote = wyoming.pop("allow_remote_unmute", False)
    cfg = replace(Config(), state_dir=str(tmp_path / "state"),
                  assist=AssistConfig(mode="wyoming", name=NAME,
                                      allow_remote_unmute=remote,
                                      wyoming=WyomingConfig(**{"port": free_port(),
                                                               **wyoming})))
    return assemble(cfg, source, factory, speaker)


@pytest.fixture
def make_satellite(tmp_path):  # type: ignore[no-untyped-def]
    """``make_satellite(source, factory, speaker, **wyoming)``: ``satellite``, each in a state
    directory of its own, stopped after."""
    each = itertools.count()
    yield from stopped_after(
        lambda *args, **kwargs: satellite(tmp_path / str(next(each)), *args, **kwargs))


@dataclass
class HomeAssistant:
    """What the Wyoming client heard, in order."""

    client: AsyncTcpClient
    heard: list[Event] = field(default_factory=list)
    on_event: Callable[[HomeAssistant, Event], None] | None = None
    reader: asyncio.Task[None] | None = None

    async def open(self) -> HomeAssistant:
        await self.client.connect()
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while (event := await self.client.read_event()) is not None:
            self.heard.append(event)
            if self.on_event is not None:
                self.on_event(self, event)

    async def send(self, eventable: Any) -> None:
        await self.client.write_event(eventable.event())

    def of(self, kind: Any) -> list[Event]:
        return [e for e in self.heard if kind.is_type(e.type)]

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(e.payload or b"" for e in self.of(AudioChunk)), "<i2")

    async def round_trip(self) -> None:
        """A ping answered: whatever the device sent before it has arrived."""
        pongs = len(self.of(Pong))
        await self.send(Ping(text="sync"))
        await until(lambda: len(self.of(Pong)) > pongs, "the pong")

    async def close(self) -> None:
        await self.client.disconnect()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self.reader


async def home_assistant(sat: Satellite, on_event: Any = None,
                         run_satellite: bool = True) -> HomeAssistant:
    ha = await HomeAssistant(AsyncTcpClient("127.0.0.1", sat.port), on_event=on_event).open()
    if run_satellite:
        await ha.send(RunSatellite())
        assert sat.device.assist is not None and sat.device.assist.server is not None
        await until(sat.device.assist.server.destination, "run-satellite to arrive")
    return ha


def test_describe_gives_a_satellite_with_its_name_area_and_wake_words(make_satellite):
    sat = make_satellite(area="Kitchen")

    async def client() -> HomeAssistant:
        ha = await home_assistant(sat, run_satellite=False)
        await ha.send(Describe())
        await until(lambda: ha.of(Info), "the info")
        await ha.round_trip()
        await ha.close()
        return ha

    ha = asyncio.run(client())
    info = Info.from_event(ha.of(Info)[0])
    assert info.satellite is not None
    assert (info.satellite.name, info.satellite.area) == (NAME, "Kitchen")
    assert info.satellite.active_wake_words == ["Hey Jarvis"]
    assert Pong.from_event(ha.of(Pong)[0]).text == "sync"


def test_a_wake_word_runs_the_pipeline_and_streams_the_pre_roll_sample_exact(make_satellite):
    sat = make_satellite(end_stage="intent")
    stream = wake_stream()

    async def client() -> HomeAssistant:
        ha = await home_assistant(sat)
        sat.run()
        await until(lambda: ha.of(AudioStop), "the end of the turn")
        await ha.round_trip()
        await ha.close()
        return ha

    ha = asyncio.run(client())
    kinds = [e.type for e in ha.heard if e.type != "audio-chunk"]
    assert kinds == ["detection", "run-pipeline", "audio-start", "audio-stop", "pong"]
    assert Detection.from_event(ha.of(Detection)[0]).name == "hey_jarvis"
    run = RunPipeline.from_event(ha.of(RunPipeline)[0])
    assert (run.start_stage, run.end_stage, run.wake_word_name) == ("asr", "intent",
                                                                    "hey_jarvis")
    start = AudioStart.from_event(ha.of(AudioStart)[0])
    assert (start.rate, start.width, start.channels) == (16000, 2, 1)
    order = [e.type for e in ha.heard]
    assert order.index("audio-stop") > max(i for i, t in enumerate(order) if t == "audio-chunk")
    begin = pre_roll_start(sat)
    heard = ha.samples
    assert len(heard) > frames_for(sat.cfg.audio.pre_roll_s) * FRAME_SAMPLES + 16000
    assert np.array_equal(heard, stream[begin:begin + len(heard)])
    [stopped] = events(sat, RecordingStopped)
    assert stopped.reason == "silence"
    assert begin + len(heard) == round(stopped.t / FRAME_S) * FRAME_SAMPLES
    sending, delivered = sat.ledger()
    assert sending["result"] == "sending" and sending["destination"].startswith("wyoming://")
    assert delivered["bytes"] == len(heard) * 2 and "ended by vad" in delivered["note"]


def test_a_transcript_from_the_client_ends_the_stream(make_satellite):
    sat = make_satellite(ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S))
    pre_roll = frames_for(sat.cfg.audio.pre_roll_s)
    marks: dict[str, int] = {}

    def transcript_after_five_live_frames(ha: HomeAssistant, event: Event) -> None:
        if AudioChunk.is_type(event.type) and len(ha.of(AudioChunk)) == pre_roll + 5:
            marks["sent"] = 1
            asyncio.get_running_loop().create_task(ha.send(Transcript(text="lights on")))

    async def client() -> HomeAssistant:
        ha = await home_assistant(sat, transcript_after_five_live_frames)
        sat.run()
        await until(lambda: "sent" in marks, "five live frames")
        await ha.round_trip()  # the device took the transcript before it answered the ping
        marks["answered"] = len(ha.of(AudioChunk))
        await until(lambda: sat.events.of(RecordingStopped), "the recording to end")
        await ha.round_trip()
        await ha.close()
        return ha

    ha = asyncio.run(client())
    assert len(ha.of(AudioChunk)) == marks["answered"]  # nothing after the transcript
    assert ha.of(AudioStop) == []  # the client ended it: nothing is sent back
    begin = pre_roll_start(sat)
    assert np.array_equal(ha.samples, wake_stream()[begin:begin + len(ha.samples)])
    assert [e["result"] for e in sat.ledger()] == ["sending", "delivered"]
    assert "ended by assistant" in sat.ledger()[1]["note"]


def test_a_mute_during_a_turn_withdraws_it_before_the_next_frame(make_satellite, factory):
    from wyoming.error import Error

    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_satellite(source, factory)
    pre_roll = frames_for(sat.cfg.audio.pre_roll_s)
    factory.pin(MUTE_PIN).drive_low()  # the switch on listen

    def mute_after_three_live_frames(ha: HomeAssistant, event: Event) -> None:
        if AudioChunk.is_type(event.type) and len(ha.of(AudioChunk)) == pre_roll + 3:
            factory.pin(MUTE_PIN).drive_high()

    async def client() -> HomeAssistant:
        ha = await home_assistant(sat, mute_after_three_live_frames)
        sat.run()
        assert ha.reader is not None
        await asyncio.wait_for(ha.reader, 60)  # the device closes the connection
        await ha.close()
        return ha

    ha = asyncio.run(client())
    assert ha.of(AudioStop) == []  # the client would transcribe what came before one
    [error] = ha.of(Error)
    assert Error.from_event(error).code == "aborted"
    assert ha.heard[-1] is error  # nothing after it
    muted = wait_for(lambda: [e for e in sat.events.of(MuteChanged) if e.muted],
                     what="the mute event")[0]
    begin = pre_roll_start(sat)
    heard = ha.samples
    assert begin + len(heard) <= round(muted.t / FRAME_S) * FRAME_SAMPLES
    assert np.array_equal(heard, wake_stream()[begin:begin + len(heard)]) or \
        not heard[-FRAME_SAMPLES:].any()  # a frame in flight at the edge is silenced
    sending, delivered = sat.ledger()
    assert "ended by mute" in delivered["note"] and delivered["bytes"] == len(heard) * 2


def test_the_answer_plays_then_the_client_hears_played(make_satellite):
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    speaker = RoomSpeaker(source)
    sat = make_satellite(source, speaker=speaker)
    answer = synth.concat([phrase("hey jarvis"), synth.silence(0.2),
                           phrase("the kitchen light is on")])

    async def client() -> HomeAssistant:
        ha = await home_assistant(sat)
        sat.run()
        await until(lambda: ha.of(AudioStop), "the end of the turn")
        await ha.send(AudioStart(rate=16000, width=2, channels=1))
        for begin in range(0, len(answer), 1024):
            await ha.send(AudioChunk(rate=16000, width=2, channels=1,
                                     audio=answer[begin:begin + 1024].tobytes()))
        await ha.send(AudioStop())
        await until(lambda: ha.of(Played), "the device to say the answer has played")
        await ha.close()
        return ha

    asyncio.run(client())
    assert np.array_equal(np.concatenate(speaker.played), answer)
    assert (speaker.opened, speaker.closed_answers) == (1, 1)
    assert sat.device.daemon.bus.flush()
    # gated while it played: the "hey jarvis" in the answer did not wake the device
    assert len([e for e in sat.events.of(DetectionEvent) if not e.ignored]) == 1


def test_pause_satellite_mutes_and_run_satellite_never_clears_the_switch(make_satellite,
                                                                        factory):
    silence = ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S)
    sat = make_satellite(silence, factory, allow_remote_unmute=True)
    pin = factory.pin(MUTE_PIN)
    pin.drive_low()  # the switch on listen
    mute = sat.device.hardware.mute

    async def client() -> None:
        ha = await home_assistant(sat)
        sat.run()
        await ha.send(PauseSatellite())
        await until(lambda: mute.causes == {"soft"}, "the pause to mute the device")
        assert sat.device.assist is not None and not sat.device.assist.server.destination()
        await ha.send(RunSatellite())  # the owner opted in: it lifts its own pause
        await until(lambda: not mute.causes, "run-satellite to lift the pause")
        await ha.send(PauseSatellite())
        await until(lambda: mute.causes == {"soft"}, "the second pause")
        pin.drive_high()  # the switch on mute
        await until(lambda: mute.causes == {"soft", "switch"}, "the switch")
        await ha.send(RunSatellite())
        await until(lambda: mute.causes == {"switch"}, "the soft mute to clear")
        await ha.round_trip()
        await ha.close()

    asyncio.run(client())
    assert mute.muted and mute.causes == {"switch"}  # the hardware switch beats run-satellite


def test_without_the_opt_in_run_satellite_does_not_unmute(make_satellite, factory):
    silence = ScriptedSource(synth.silence(1.0), endless=True, pace_s=FRAME_S)
    sat = make_satellite(silence, factory)
    factory.pin(MUTE_PIN).drive_low()
    mute = sat.device.hardware.mute

    async def client() -> None:
        ha = await home_assistant(sat)
        sat.run()
        await ha.send(PauseSatellite())
        await until(lambda: mute.causes == {"soft"}, "the pause to mute the device")
        await ha.send(RunSatellite())
        await ha.round_trip()
        await ha.close()

    asyncio.run(client())
    wait_for(lambda: sat.device.daemon.bus.flush(), what="the bus to drain")
    assert mute.causes == {"soft"}  # unmute at the device


def test_it_listens_on_loopback_unless_told_otherwise(tmp_path):
    assert WyomingConfig().host == "127.0.0.1" and WyomingConfig().port == 10700
    assert AssistConfig(mode="wyoming").listens_on == ("127.0.0.1", 10700)
    assert AssistConfig(mode="esphome").listens_on == ("0.0.0.0", 6053)
    assert AssistConfig(mode="stt").listens_on is None


def test_a_port_in_use_is_one_line_naming_the_key(tmp_path):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"assist.wyoming.port = {port} on "):
            satellite(tmp_path, HeldSource(synth.silence(0.5)), port=port)


def test_doctor_says_a_lan_address_is_unencrypted_and_loopback_is_not(tmp_path):
    from edge.service.doctor import Doctor, Status

    def findings(host: str) -> list[tuple[Status, str]]:
        cfg = replace(Config(), state_dir=str(tmp_path / "state"),
                      audio=AudioConfig(output="none"),
                      assist=AssistConfig(mode="wyoming",
                                          wyoming=WyomingConfig(host=host, port=free_port())))
        doctor = Doctor(cfg, ntp=lambda: True, service=lambda: None)
        return [(f.status, f.detail) for f in doctor.run(["assist"])]

    local = findings("127.0.0.1")
    assert [s for s, _ in local] == [Status.OK, Status.OK, Status.OK]
    assert "listens on this machine only" in local[0][1]
    assert local[1][1] == "audio.output = 'none': the assistant's answers are not played"
    lan = findings("0.0.0.0")
    assert lan[0][0] is Status.WARN
    assert "assist.wyoming.host = '0.0.0.0': Wyoming has no encryption" in lan[0][1]
    assert lan[2][0] is Status.OK  # and the port is free


class Bell:
    can_ring = True

    def __init__(self) -> None:
        self.rings = 0

    def request_ring(self) -> None:
        self.rings += 1


def test_a_finished_timer_rings_the_bell_and_other_timer_events_do_not():
    from wyoming.timer import TimerFinished, TimerStarted

    from edge.assist.wyoming import WyomingServer, WyomingSettings

    bell = Bell()
    server = WyomingServer(WyomingSettings("127.0.0.1", 0, NAME, "", "tts", ("hey_jarvis",)),
                           mute=None, on_end=lambda *_: None, bell=bell)  # type: ignore[arg-type]
    client: Any = object()
    server.handle(client, TimerStarted(id="t1", total_seconds=60).event())
    assert bell.rings == 0
    server.handle(client, TimerFinished(id="t1").event())
    assert bell.rings == 1


def test_home_assistant_can_discover_the_satellite_over_mdns(tmp_path):
    import os

    from zeroconf import IPVersion, Zeroconf

    name = f"wyoming-test-{os.getpid()}"  # unique: other test runs may announce at once
    cfg = replace(Config(), state_dir=str(tmp_path / "state"),
                  audio=replace(Config().audio, output="none"),
                  assist=AssistConfig(mode="wyoming", name=name,
                                      wyoming=WyomingConfig(port=free_port())))
    device = build(cfg, HeldSource(synth.silence(1.0)), device_id=DEVICE_ID)
    try:
        browser = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            info = browser.get_service_info("_wyoming._tcp.local.",
                                            f"{name}._wyoming._tcp.local.", timeout=30000)
        finally:
            browser.close()
        assert info is not None, "the satellite was not announced"
        assert device.assist is not None
        assert info.port == device.assist.port and info.parsed_addresses() == ["127.0.0.1"]
    finally:
        device.daemon.close()


def test_edge_run_on_alsa_streams_the_turn_and_plays_the_answer_on_an_alsa_output(alsa,
                                                                                 tmp_path):
    """The whole device as a person runs it: `edge run` on a real ALSA capture device (the
    file plugin, at a microphone's pace) and a real ALSA output (the file plugin: what was
    played lands in a file), the wyoming client playing Home Assistant."""
    import subprocess
    import sys

    import soxr

    stream = alsa_stream()
    alsa.add("usbmic", stream)
    played = tmp_path / "played.raw"
    with alsa.path.open("a") as rc:  # an output the device plays its answers on
        rc.write(f'pcm.speaker {{ type file; slave.pcm {{ type null }}; file "{played}"; '
                 'format "raw" }\n')
    port = free_port()
    conf = tmp_path / "edge.toml"
    conf.write_text(f'state_dir = "{tmp_path / "state"}"\n[audio]\nrate = 16000\n'
                    'output = "speaker"\n'
                    f'[assist]\nmode = "wyoming"\nname = "{NAME}"\n'
                    f'[assist.wyoming]\nport = {port}\n')
    answer = phrase("the kitchen light is on")
    chunks = [answer[i:i + 1024] for i in range(0, len(answer), 1024)]
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(conf),
                             "--input", "usbmic", "--realtime"], stderr=subprocess.PIPE,
                            text=True, env=alsa.env)

    async def client() -> HomeAssistant:
        await until(lambda: listening(proc, port), "`edge run` to listen", timeout=120)
        ha = await HomeAssistant(AsyncTcpClient("127.0.0.1", port)).open()
        await ha.send(RunSatellite())
        await until(lambda: ha.of(AudioStop), "the turn to end", timeout=120)
        await ha.send(AudioStart(rate=16000, width=2, channels=1))
        for chunk in chunks:
            await ha.send(AudioChunk(rate=16000, width=2, channels=1, audio=chunk.tobytes()))
        await ha.send(AudioStop())
        await until(lambda: ha.of(Played), "the answer to play", timeout=60)
        await ha.close()
        return ha

    try:
        ha = asyncio.run(client())
        stop_edge_run(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert Detection.from_event(ha.of(Detection)[0]).name == "hey_jarvis"
    assert_streamed_from_the_wake_word(stream, ha.samples)
    from edge.assist.answer import PyAudioSpeaker

    speaker = PyAudioSpeaker("speaker")  # the rate the device played at, as it found it
    rate = speaker.rate
    speaker.close()
    want = answer
    if rate != 16000:  # resampled chunk by chunk, as the device's player does
        expect = soxr.ResampleStream(16000, rate, 1, dtype="float32")
        want = np.concatenate([expect.resample_chunk(c.astype(np.float32)) for c in chunks]
                              + [expect.resample_chunk(np.zeros(0, np.float32), last=True)])
        want = np.clip(np.round(want), -32768, 32767).astype(np.int16)
    got = np.fromfile(played, dtype="<i2")
    assert len(got) >= len(want) and np.array_equal(got[:len(want)], want)
