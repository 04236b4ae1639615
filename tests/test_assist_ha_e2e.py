"""A real Home Assistant, end to end: the satellite added through HA's own ESPHome config flow
with the Noise key, "hey jarvis" + a request spoken into the device, HA's Assist pipeline
turns the ``demo`` integration's ``light.kitchen_lights`` on and speaks its answer with the
demo's offline text-to-speech, and the device plays that answer on an ALSA output (the
``file`` plugin: what was played lands in a file), sample for sample.

Speech to text: the ``demo`` integration's engine takes only stereo audio, and HA refuses to
run it on a satellite's 16 kHz mono stream (``stt-provider-unsupported-metadata``). So the
pipeline's engine is ``edge_stt``, a custom integration written into HA's configuration
directory here: like the demo's, it hears "Turn the Kitchen Lights on" whatever is said,
and it also keeps the audio HA handed it, so the test shows HA received the device's
microphone samples from the pre-roll on, unchanged. Everything after it (intent, the light,
text to speech, streaming the answer to the device) is HA's own.

Home Assistant 2026.x runs in a Debian trixie root under ``systemd-nspawn``
(tests/ha_root.py: built once with the network and cached; a run needs none). It is set up
as a person would, over its own HTTP and websocket APIs: the onboarding's first user, a
token, an Assist pipeline with the demo engines made preferred, then Settings -> Add
integration -> ESPHome (host, port, then the encryption key). Nothing is written into its
storage behind its back.

Needs root (systemd-nspawn). ``make test-ha``; marked slow, so ``make test`` leaves it out.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from edge.audio.frames import FRAME_S, FRAME_SAMPLES
from edge.config import AssistConfig, Config, replace
from edge.privacy.ledger import read_ledger
from tests.assist_helpers import wake_stream
from tests.device import build
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import ScriptedSource
from tests.fixtures.mqtt import free_port
from tests.ha_root import HomeAssistant, ha_root
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

NAME = "edge-satellite"
CLIENT_ID = "http://127.0.0.1/"
LIGHT = "light.kitchen_lights"

CONFIGURATION = """\
homeassistant:
  name: Edge test home
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
  language: en
  internal_url: "http://127.0.0.1:{port}"
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
demo:
assist_pipeline:
stt:
  - platform: edge_stt
logger:
  default: warning
  logs:
    homeassistant.components.esphome: debug
    homeassistant.components.assist_pipeline: debug
    homeassistant.components.assist_satellite: debug
"""

# A legacy speech-to-text platform (as the demo's was): 16 kHz mono, what satellites send.
EDGE_STT = {
    "manifest.json": json.dumps({
        "domain": "edge_stt", "name": "Edge test speech to text", "version": "1.0.0",
        "codeowners": [], "dependencies": ["stt"], "documentation": "https://example.invalid",
        "iot_class": "local_push", "requirements": []}),
    "__init__.py": '"""Speech to text for the edge-recorder end-to-end test."""\n',
    "stt.py": '''"""Hears what the demo's engine hears; keeps the audio it was handed."""
from homeassistant.components import stt

TEXT = "Turn the Kitchen Lights on"


async def async_get_engine(hass, config, discovery_info=None):
    return HeardProvider(hass)


class HeardProvider(stt.Provider):
    def __init__(self, hass):
        self.hass = hass
        self.name = "Edge test STT"

    supported_languages = property(lambda self: ["en"])
    supported_formats = property(lambda self: [stt.AudioFormats.WAV])
    supported_codecs = property(lambda self: [stt.AudioCodecs.PCM])
    supported_bit_rates = property(lambda self: [stt.AudioBitRates.BITRATE_16])
    supported_sample_rates = property(lambda self: [stt.AudioSampleRates.SAMPLERATE_16000])
    supported_channels = property(lambda self: [stt.AudioChannels.CHANNEL_MONO])

    async def async_process_audio_stream(self, metadata, stream):
        audio = b"".join([chunk async for chunk in stream])
        path = self.hass.config.path("heard.raw")
        await self.hass.async_add_executor_job(_write, path, audio)
        return stt.SpeechResult(TEXT, stt.SpeechResultState.SUCCESS)


def _write(path, audio):
    with open(path, "wb") as f:
        f.write(audio)
''',
}

# The device's answer output: ALSA's file plugin over a null device.
ASOUNDRC = """pcm.speaker {{ type file; slave.pcm {{ type null }}; file "{played}"; format "raw" }}
pcm.default {{ type file; slave.pcm {{ type null }}; file "/dev/null"; infile "{missing}" }}
"""


class HomeAssistantApi:
    """Home Assistant's REST and websocket APIs, with the onboarding's first user."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = ""
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._id = 0

    def up(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/onboarding", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def onboard(self) -> None:
        """Create the owner (as the onboarding page does) and log in with an auth code."""
        r = requests.post(f"{self.url}/api/onboarding/users", timeout=60, json={
            "client_id": CLIENT_ID, "name": "Owner", "username": "owner",
            "password": "correct horse battery staple", "language": "en"})
        r.raise_for_status()
        r = requests.post(f"{self.url}/auth/token", timeout=60, data={
            "grant_type": "authorization_code", "code": r.json()["auth_code"],
            "client_id": CLIENT_ID})
        r.raise_for_status()
        self.token = r.json()["access_token"]
        ws_url = self.url.replace("http://", "ws://") + "/api/websocket"
        self.ws = self._stack.enter_context(ws_connect(ws_url, max_size=None, open_timeout=60))
        assert json.loads(self.ws.recv(60))["type"] == "auth_required"
        self.ws.send(json.dumps({"type": "auth", "access_token": self.token}))
        assert json.loads(self.ws.recv(60))["type"] == "auth_ok"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Any:
        r = requests.get(f"{self.url}{path}", headers=self.headers, timeout=60)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = requests.post(f"{self.url}{path}", headers=self.headers, json=body, timeout=120)
        assert r.status_code == 200, f"POST {path}: {r.status_code} {r.text}"
        return r.json()

    def command(self, kind: str, **fields: Any) -> Any:
        """One websocket command; its result (events of subscriptions are not used)."""
        assert self.ws is not None
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "type": kind, **fields}))
        while True:
            msg = json.loads(self.ws.recv(120))
            if msg.get("id") == self._id and msg["type"] == "result":
                assert msg["success"], f"{kind}: {msg.get('error')}"
                return msg["result"]

    def state(self, entity_id: str) -> str:
        return str(self.get(f"/api/states/{entity_id}")["state"])

    def close(self) -> None:
        self._stack.close()


@dataclass
class Running:
    ha: HomeAssistant
    api: HomeAssistantApi
    log: Path
    config: Path


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = ha_root()
    where = tmp_path_factory.mktemp("ha")
    config = where / "config"
    config.mkdir()
    port = free_port()
    (config / "configuration.yaml").write_text(CONFIGURATION.format(port=port))
    component = config / "custom_components" / "edge_stt"
    component.mkdir(parents=True)
    for name, text in EDGE_STT.items():
        (component / name).write_text(text)
    log = where / "hass.log"
    with HomeAssistant(root, config, log, port) as ha:
        api = HomeAssistantApi(ha.url)

        def up() -> bool:
            assert ha.alive(), f"Home Assistant exited:\n{tail(log)}"
            return api.up()

        wait_for(up, 600, "Home Assistant to answer on its HTTP port", poll_s=1.0)
        api.onboard()
        # Its HTTP server answers while integrations are still being set up (the demo's text
        # to speech among them): the test starts once Home Assistant says it is running,
        # with every integration it uses loaded and edge_stt among the speech-to-text engines.
        needed = {"tts", "stt", "assist_pipeline", "conversation", "demo.tts"}
        seen: dict[str, Any] = {}

        def started() -> bool:
            assert ha.alive(), f"Home Assistant exited:\n{tail(log)}"
            seen.update(api.command("get_config"))
            if seen.get("state") != "RUNNING" or not needed <= set(seen["components"]):
                return False
            engines = api.command("stt/engine/list", language="en")["providers"]
            return "edge_stt" in [p["engine_id"] for p in engines]

        try:
            wait_for(started, 300, "Home Assistant to finish starting", poll_s=0.5)
        except AssertionError:
            raise AssertionError(f"Home Assistant did not finish starting: state "
                                 f"{seen.get('state')}, components missing "
                                 f"{sorted(needed - set(seen.get('components', [])))}") from None
        try:
            yield Running(ha, api, log, config)
        finally:
            api.close()


def tail(log: Path, n: int = 6000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def demo_engine(providers: list[dict[str, Any]], kind: str) -> str:
    ids = [p["engine_id"] for p in providers if "demo" in p["engine_id"]]
    assert ids, f"no demo {kind} engine among {[p['engine_id'] for p in providers]}"
    return str(ids[0])


def test_home_assistant_runs_its_pipeline_on_what_the_device_heard_and_it_speaks_the_answer(
        home_assistant: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.assist.answer import PyAudioSpeaker

    api = home_assistant.api
    # an Assist pipeline (as Settings -> Voice assistants makes one): the demo's text to
    # speech, edge_stt (see above), HA's own conversation agent; made the preferred one
    stts = [p["engine_id"] for p in api.command("stt/engine/list", language="en")["providers"]]
    assert "edge_stt" in stts, stts
    stt = "edge_stt"
    tts = demo_engine(api.command("tts/engine/list", language="en")["providers"], "tts")
    pipeline = api.command(
        "assist_pipeline/pipeline/create", name="Edge test", language="en",
        conversation_engine="conversation.home_assistant", conversation_language="en",
        stt_engine=stt, stt_language="en", tts_engine=tts, tts_language="en", tts_voice=None,
        wake_word_entity=None, wake_word_id=None)
    api.command("assist_pipeline/pipeline/set_preferred", pipeline_id=pipeline["id"])

    # the device: assist on, answers on an ALSA output whose samples land in a file
    played = tmp_path / "played.raw"
    conf = tmp_path / "asoundrc"
    conf.write_text(ASOUNDRC.format(played=played, missing=tmp_path / "none.raw"))
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    cfg = replace(Config(), state_dir=str(tmp_path / "state"),
                  assist=AssistConfig(mode="esphome", host="127.0.0.1", port=free_port(),
                                      name=NAME))
    source = ScriptedSource(wake_stream(), endless=True, pace_s=FRAME_S)
    speaker = PyAudioSpeaker("speaker")
    device = build(cfg, source, device_id="0123456789abcdef", speaker=speaker)
    assist = device.assist
    assert assist is not None
    thread: threading.Thread | None = None
    try:
        key = _key(cfg)
        # Settings -> Devices & services -> Add integration -> ESPHome: host and port, then
        # the key it asks for (the device refuses a client without it)
        flow = api.post("/api/config/config_entries/flow",
                        {"handler": "esphome", "show_advanced_options": False})
        flow = api.post(f"/api/config/config_entries/flow/{flow['flow_id']}",
                        {"host": "127.0.0.1", "port": assist.port})
        assert flow.get("step_id") == "encryption_key", flow
        flow = api.post(f"/api/config/config_entries/flow/{flow['flow_id']}",
                        {"noise_psk": key})
        assert flow["type"] == "create_entry", flow
        assert flow["title"] == NAME

        server = assist.server
        assert server is not None

        def subscribed() -> str:
            assert home_assistant.ha.alive(), tail(home_assistant.log)
            return server.destination()

        wait_for(subscribed, 180, "Home Assistant to subscribe to the voice assistant",
                 poll_s=0.5)
        api.post("/api/services/light/turn_off", {"entity_id": LIGHT})
        wait_for(lambda: api.state(LIGHT) == "off", 60, "the kitchen lights to be off")

        thread = threading.Thread(target=device.daemon.run, name="audio-loop",
                                  kwargs={"install_signals": False}, daemon=True)
        thread.start()
        wait_for(lambda: api.state(LIGHT) == "on", 240,
                 f"HA's pipeline to turn the kitchen lights on\n{tail(home_assistant.log)}",
                 poll_s=0.5)
        answer = assist.answer
        assert answer is not None
        wait_for(lambda: answer.answers >= 1, 240, "the device to play HA's answer",
                 poll_s=0.5)

        # HA's own record of the run: what it heard, what it did, what it said
        runs = api.command("assist_pipeline/pipeline_debug/list",
                           pipeline_id=pipeline["id"])["pipeline_runs"]
        assert len(runs) == 1, runs
        events = api.command("assist_pipeline/pipeline_debug/get", pipeline_id=pipeline["id"],
                             pipeline_run_id=runs[0]["pipeline_run_id"])["events"]
        by_type = {e["type"]: e.get("data") or {} for e in events}
        assert "error" not in by_type, by_type.get("error")
        assert by_type["stt-end"]["stt_output"]["text"] == "Turn the Kitchen Lights on"
        speech = by_type["intent-end"]["intent_output"]["response"]["speech"]["plain"]["speech"]
        assert speech  # e.g. "Turned on the light"
        assert by_type["run-start"]["pipeline"] == pipeline["id"]
        url = by_type["tts-end"]["tts_output"]["url"]

        # the device played HA's spoken answer: the sound at the answer's URL, as the
        # device's output resampled it, chunk by chunk as HA streamed it
        r = requests.get(url if url.startswith("http") else f"{api.url}{url}", timeout=60)
        r.raise_for_status()
        wav, rate = soundfile.read(io.BytesIO(r.content), dtype="int16")
        assert rate == 16000 and wav.ndim == 1 and len(wav) > 8000
        got = np.fromfile(played, dtype="<i2")
        want = _as_played(wav, speaker.rate)
        assert len(got) >= len(want) and np.array_equal(got[:len(want)], want)

        # HA's speech to text was handed the device's microphone samples, unchanged, from a
        # frame boundary before the wake word (the pre-roll) on
        heard = np.frombuffer((home_assistant.config / "heard.raw").read_bytes(), "<i2")
        stream = wake_stream()
        assert len(heard) >= 16000
        starts = [i for i in range(0, len(stream) - len(heard), FRAME_SAMPLES)
                  if np.array_equal(stream[i:i + len(heard)], heard)]
        assert len(starts) == 1 and starts[0] < 16000 + len(phrase("hey jarvis")), starts

        # and the owner's ledger has the turn: one entry before, one after
        entries = read_ledger(cfg.state_path / "ledger.jsonl").entries
        assert [e["result"] for e in entries] == ["sending", "delivered"]
        assert entries[0]["destination"].startswith("esphome://127.0.0.1:")
    finally:
        if thread is not None:
            source.endless = False
            device.daemon.stop()
            thread.join(60)
        else:
            device.daemon.close()


def _key(cfg: Config) -> str:
    from edge.assist.keys import key_path, read_key

    key = read_key(key_path(cfg))
    assert key is not None
    return key


def _as_played(samples: np.ndarray, rate: int, chunk: int = 512) -> np.ndarray:
    """``samples`` as the speaker writes them at ``rate``: resampled in HA's 512-sample
    chunks, as they arrive."""
    if rate == 16000:
        return samples
    import soxr

    stream = soxr.ResampleStream(16000, rate, 1, dtype="float32")
    out = [stream.resample_chunk(samples[i:i + chunk].astype(np.float32))
           for i in range(0, len(samples), chunk)]
    out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.clip(np.round(np.concatenate(out)), -32768, 32767).astype(np.int16)

