"""Each utterance to a real local OpenAI-compatible speech-to-text server, on loopback.

The server in this test implements ``POST /v1/audio/transcriptions`` as faster-whisper-server
and whisper.cpp's server do (multipart form: ``file``, ``model``, ``language``); it decodes
the WAV and answers a "transcript" made from what it decoded (its length and rate), so a
transcript that comes back proves the audio arrived whole. It can fail (an HTTP status) or
stall (a timeout), and speak TLS with a throwaway CA (trustme).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import logging
import threading
import wave
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.activations.store import ActivationLog, db_path
from edge.assist.stt import OUTBOX_DIR, transcription_url
from edge.audio import synth
from edge.audio.frames import FRAME_S, FRAME_SAMPLES
from edge.config import (
    AssistConfig,
    Config,
    HardwareConfig,
    MqttConfig,
    SttConfig,
    replace,
    validate,
)
from edge.errors import ConfigError
from edge.pipeline.events import RecordingStarted, RecordingStopped, TranscriptReady
from tests.assist_helpers import DEVICE_ID, MUTE_PIN, Satellite, wake_stream
from tests.device import build
from tests.fakes import Collector, HeldSource
from tests.fixtures.audio import prose
from tests.fixtures.hardware import ScriptedSource
from tests.fixtures.https import LoopbackServer, TlsFiles, make_tls_files
from tests.test_assist_esphome import pre_roll_start
from tests.waiting import wait_for


@dataclass(frozen=True)
class Transcription:
    path: str
    fields: dict[str, str]
    samples: np.ndarray
    rate: int
    status: int
    authorization: str


def heard(samples: np.ndarray, rate: int) -> str:
    """What the test server "hears" in a WAV: its length, so the transcript proves it."""
    return f"{len(samples)} samples at {rate} Hz"


class TranscriptionServer(LoopbackServer):
    """``/v1/audio/transcriptions`` on loopback (http, or https with ``tls``)."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.requests: list[Transcription] = []
        self._statuses: list[int] = []
        self.stall = threading.Event()
        """While clear and ``stalls`` > 0, a request waits (the client times out)."""
        self.stalls = 0
        self._cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._cond:
                    stall = server.stalls > 0
                    server.stalls -= stall
                if stall:
                    server.stall.wait(30)
                    return  # the client gave up: nothing is answered
                with server._cond:
                    status = server._statuses.pop(0) if server._statuses else 200
                fields, samples, rate = parse(self.headers["Content-Type"], body)
                with server._cond:
                    server.requests.append(Transcription(
                        self.path, fields, samples, rate, status,
                        self.headers.get("Authorization", "")))
                    server._cond.notify_all()
                answer = json.dumps({"text": heard(samples, rate)} if status == 200 else
                                    {"error": {"message": "busy"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, tls)

    @property
    def url(self) -> str:
        return self.origin

    def respond(self, *statuses: int) -> None:
        with self._cond:
            self._statuses.extend(statuses)

    def ok(self) -> list[Transcription]:
        return [r for r in self.requests if r.status == 200]

    def close(self) -> None:
        self.stall.set()
        super().close()


def parse(content_type: str, body: bytes) -> tuple[dict[str, str], np.ndarray, int]:
    """The multipart form: its text fields, and the ``file`` WAV decoded."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    samples, rate = np.zeros(0, np.int16), 0
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if name == "file":
            with wave.open(io.BytesIO(data)) as w:
                assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
                rate = w.getframerate()
                samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        else:
            fields[str(name)] = data.decode()
    return fields, samples, rate


@pytest.fixture
def stt_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    made: list[TranscriptionServer] = []

    def make(tls: bool = False) -> TranscriptionServer:
        files = make_tls_files(tmp_path_factory.mktemp("tls")) if tls else None
        made.append(TranscriptionServer(files))
        return made[-1]

    yield make
    for server in made:
        server.close()


def device(tmp_path: Path, url: str, source: Any = None, factory: Any = None,
           broker: Any = None, **stt: Any) -> Satellite:
    cfg = replace(Config(), state_dir=str(tmp_path / "state"),
                  assist=AssistConfig(mode="stt", stt=SttConfig(url=url, **stt)))
    if broker is not None:
        cfg = replace(cfg, mqtt=MqttConfig(enabled=True, host=broker.host, port=broker.port,
                                           tls=False))
    cfg = replace(cfg, upload=replace(cfg.upload, retry_min_s=0.05, retry_max_s=0.2))
    seams: dict[str, Any] = {"device_id": DEVICE_ID}
    if factory is not None:
        cfg = replace(cfg, hardware=HardwareConfig(profile="generic-usb"))
        seams["pin_factory"] = factory
    built = build(cfg, source if source is not None else HeldSource(wake_stream()), **seams)
    events = Collector()
    built.daemon.bus.subscribe("test", events)
    return Satellite(built, cfg, events, built.daemon.runner.source)


@pytest.fixture
def make_device(tmp_path):  # type: ignore[no-untyped-def]
    made: list[Satellite] = []

    def make(url: str, source: Any = None, factory: Any = None, broker: Any = None,
             **stt: Any) -> Satellite:
        made.append(device(tmp_path / str(len(made)), url, source, factory, broker, **stt))
        return made[-1]

    yield make
    for sat in made:
        sat.stop()


def transcripts(sat: Satellite) -> list[TranscriptReady]:
    return wait_for(lambda: sat.events.of(TranscriptReady), what="a transcript")


def test_each_utterance_is_one_wav_with_the_pre_roll_and_its_transcript_comes_back(
        stt_server, make_device, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.service.activity")
    server = stt_server()
    token = tmp_path / "stt-token"
    token.write_text("sk-local-secret\n")
    sat = make_device(server.url, language="en", model="Systran/faster-whisper-small",
                      api_key_file=str(token))
    sat.run()
    [transcript] = transcripts(sat)
    [request] = server.ok()
    assert request.path == "/v1/audio/transcriptions"
    assert request.fields["model"] == "Systran/faster-whisper-small"
    assert request.fields["language"] == "en"
    assert request.authorization == "Bearer sk-local-secret"
    assert request.rate == 16000
    begin = pre_roll_start(sat)
    [stopped] = sat.events.of(RecordingStopped)
    end = round(stopped.t / FRAME_S) * FRAME_SAMPLES
    assert np.array_equal(request.samples, wake_stream()[begin:end])  # pre-roll to VAD end
    assert transcript.text == heard(request.samples, 16000)
    assert transcript.destination == server.url and transcript.wake_word == "hey_jarvis"
    sending, delivered = sat.ledger()
    assert (sending["result"], delivered["result"]) == ("sending", "delivered")
    assert delivered["destination"] == server.url
    assert delivered["note"] == f"transcript: {len(transcript.text)} characters"
    ledger = (sat.cfg.state_path / "ledger.jsonl").read_text()
    assert transcript.text not in ledger and "sk-local-secret" not in ledger
    assert sat.device.daemon.bus.flush()
    [line] = [r.getMessage() for r in caplog.records if " heard " in r.getMessage()]
    assert line.endswith(f"{server.url} heard {transcript.text!r} "
                         f"({len(request.samples) / 16000:.2f} s of audio)")


def test_a_500_and_a_timeout_are_retried_until_the_server_recovers(stt_server, make_device):
    server = stt_server()
    server.respond(500, 503)
    server.stalls = 1
    sat = make_device(server.url, timeout_s=1.0)
    sat.run()
    [transcript] = transcripts(sat)
    assert [r.status for r in server.requests] == [500, 503, 200]  # the stalled one unanswered
    assert transcript.text == heard(server.ok()[0].samples, 16000)
    results = [e["result"] for e in sat.ledger()]
    assert results.count("failed") == 3 and results[-1] == "delivered"
    assert sat.device.assist is not None and sat.device.assist.stt is not None
    assert sat.device.assist.stt.outbox.count() == 0


def test_an_utterance_waits_on_disk_while_the_server_is_down(stt_server, make_device):
    server = stt_server()
    server.respond(*[503] * 1000)
    sat = make_device(server.url)
    sat.run()
    wait_for(lambda: len(server.requests) >= 3, what="three failed attempts")
    assert sat.device.assist is not None and sat.device.assist.stt is not None
    assert sat.device.assist.stt.outbox.count() == 1
    assert list((sat.cfg.state_path / OUTBOX_DIR / "spool").glob("*.clip"))
    with server._cond:
        server._statuses.clear()
    [transcript] = transcripts(sat)
    assert transcript.text == heard(server.ok()[0].samples, 16000)


def test_tls_with_the_servers_ca_and_a_wrong_ca_is_retried(stt_server, make_device, tmp_path):
    server = stt_server(tls=True)
    assert server.tls is not None
    sat = make_device(server.url, ca=str(server.tls.ca))
    sat.run()
    [transcript] = transcripts(sat)
    assert transcript.destination == server.url.replace("http:", "https:")

    other = make_tls_files(tmp_path / "other")
    wrong = make_device(server.url, ca=str(other.ca))
    wrong.run()
    wait_for(lambda: sum(e["result"] == "failed" for e in wrong.ledger()) >= 2,
             what="two refused handshakes")
    assert "TLS with" in wrong.ledger()[-1]["error"]
    assert len(server.requests) == 1  # only the first device's


def test_a_mute_during_the_utterance_sends_nothing(stt_server, make_device, factory):
    server = stt_server()
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    sat = make_device(server.url, source, factory)
    factory.pin(MUTE_PIN).drive_low()
    sat.run()
    wait_for(lambda: sat.events.of(RecordingStarted), what="the recording to start")
    factory.pin(MUTE_PIN).drive_high()
    [stopped] = wait_for(lambda: sat.events.of(RecordingStopped), what="the recording to end")
    assert stopped.reason == "aborted_by_mute"
    assert sat.device.assist is not None and sat.device.assist.stt is not None
    wait_for(lambda: sat.device.assist.stt.tap.dropped == 1, what="the utterance dropped")
    assert server.requests == [] and sat.ledger() == []


def test_ten_minutes_of_prose_send_nothing(stt_server, make_device):
    server = stt_server()
    talk = prose(600.0, seed=11)
    sat = make_device(server.url, HeldSource(talk))
    frames = -(-len(talk) // FRAME_SAMPLES)
    sat.run()
    wait_for(lambda: sat.device.daemon.recorder.frame_index >= frames, 600,
             "the ten minutes to be heard")
    assert sat.device.daemon.bus.flush()
    assert server.requests == [] and sat.ledger() == []


def test_plain_http_only_to_this_machine_and_a_url_is_needed(tmp_path):
    def cfg(**stt: Any) -> Config:
        return replace(Config(), state_dir=str(tmp_path),
                       assist=AssistConfig(mode="stt", stt=SttConfig(**stt)))

    with pytest.raises(ConfigError, match=r"assist.mode = 'stt' needs assist.stt.url"):
        validate(cfg())
    with pytest.raises(ConfigError, match=r"assist.stt.url = 'http://192.0.2.7:8000' is plain "
                                          r"http to another machine; utterances may only"):
        validate(cfg(url="http://192.0.2.7:8000"))
    validate(cfg(url="http://127.0.0.1:8000"))
    validate(cfg(url="https://stt.example"))
    assert transcription_url("http://localhost:8080/") == \
        "http://localhost:8080/v1/audio/transcriptions"


def test_stt_opens_no_listening_socket(stt_server, make_device):
    server = stt_server()
    sat = make_device(server.url, HeldSource(synth.silence(0.5)))
    assert sat.device.assist is not None
    assert sat.device.assist.server is None and sat.device.assist.port == 0


@pytest.mark.parametrize("opted_in", [False, True])
def test_a_transcript_reaches_the_activation_log_and_mqtt_only_when_opted_in(
        stt_server, make_device, mqtt_broker, mqtt_collector, opted_in):
    server = stt_server()
    sat = make_device(server.url, broker=mqtt_broker, keep_transcripts=opted_in,
                      publish_transcripts=opted_in)
    collector = mqtt_collector(mqtt_broker, f"edge/{DEVICE_ID}/event/#")
    sat.run()
    [transcript] = transcripts(sat)
    collector.wait_for(2 if opted_in else 1)  # the activation's event, then the transcript's
    sat.stop()  # the activation log writes its last rows as the daemon closes
    with ActivationLog.open(db_path(sat.cfg), create=False) as store:
        [row] = store.rows()
    assert row["outcome"] == "transcribed" and row["streamed_to"] == server.url
    assert row["transcript_chars"] == len(transcript.text)
    assert row["transcript"] == (transcript.text if opted_in else None)
    topics = [m.topic for m in collector.messages]
    assert topics.count(f"edge/{DEVICE_ID}/event/activation") == 1
    sent = [json.loads(m.payload) for m in collector.messages
            if m.topic == f"edge/{DEVICE_ID}/event/transcript"]
    if opted_in:
        [message] = sent
        assert message["text"] == transcript.text and message["id"] == row["id"]
    else:
        assert sent == []


def test_edge_replay_json_prints_each_utterances_transcript(stt_server, tmp_path, wav):
    import subprocess
    import sys

    server = stt_server()
    path = wav(wake_stream(), name="kitchen.wav")
    conf = tmp_path / "edge.toml"
    conf.write_text(f'state_dir = "{tmp_path / "state"}"\n[assist]\nmode = "stt"\n'
                    f'[assist.stt]\nurl = "{server.url}"\n')
    out = subprocess.run([sys.executable, "-m", "edge", "replay", str(path), "--json",
                          "--config", str(conf)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    [transcript] = [e for e in lines if e["event"] == "transcript"]
    [clip] = [e for e in lines if e["event"] == "clip"]
    [request] = server.ok()
    assert transcript["text"] == heard(request.samples, 16000)
    assert transcript["activation_id"] == clip["activation_id"]
    assert transcript["seconds"] == round(len(request.samples) / 16000, 3)
