"""The voice satellite's turn latency, in wall-clock time, against the client Home Assistant
uses (aioesphomeapi's ``APIClient``), and the memory assist adds.

    .venv/bin/python bench/assist_bench.py            # 3 wake phrases x 4 turns each

The real daemon with ``[assist] mode = "esphome"`` (Noise on, as by default) reads a
source paced like a live microphone (each 80 ms frame 80 ms after the last); between turns
it hears silence. For each espeak wake phrase (``synth.WAKE_PHRASES`` but hey_mycroft, which
espeak's voice may not trigger) + "turn on the kitchen lights", spoken into it four times:

* ``first audio``: from the moment the frame that completed the detection was read from the
  microphone to the first ``VoiceAssistantAudio`` at the client (the request, the pre-roll
  waiting for the client's answer, the frames over Noise).
* ``url to playback``: the client sends the answer as Home Assistant does when it does not
  stream it (TTS end with the URL of a WAV on a local HTTP server, then run end); from
  sending the TTS end to the first sample written to the output.
* ``stream to playback``: the answer streamed (TTS stream start, then 512-sample chunks);
  from sending the stream start to the first sample written.
* ``answer end to ungated`` (URL turns): from the last sample written to the read of the
  first frame in which a wake word counts again (the output and input latency margin).
* ``answer end to follow-up`` (streamed turns, whose intent end says
  ``continue_conversation``): from the last sample written to the client receiving the
  follow-up's request (the microphone reopened, no wake word); nobody speaks, so the
  follow-up ends on the recorder's no-speech timeout.

Peak RSS: ``edge run`` on a WAV of one turn, in a child process, with assist off and on
(``ru_maxrss`` of the waited child; assist on imports aioesphomeapi, the Noise code and
zeroconf and listens). Targets (issue 14): first audio <= 100 ms after the detection (p95),
playback <= 300 ms after the URL (p95), assist adds <= 25 MB RSS. Results: a table on stdout
and bench/results/assist.json; exit status 1 if a target is missed.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.audio import synth  # noqa: E402
from edge.audio.frames import FRAME_S, FRAME_SAMPLES  # noqa: E402
from edge.audio.wav import encode_wav  # noqa: E402
from edge.compose.daemon import Seams, build_device  # noqa: E402
from edge.config import AssistConfig, Config, replace  # noqa: E402
from edge.pipeline.events import DetectionEvent  # noqa: E402
from tests.fakes import FakeChime  # noqa: E402

OUT = ROOT / "bench" / "results"
PHRASES = {k: v for k, v in synth.WAKE_PHRASES.items() if k != "hey_mycroft"}
TURNS_EACH = 4
TARGET_FIRST_AUDIO_MS = 100.0
TARGET_PLAYBACK_MS = 300.0
TARGET_RSS_MB = 25.0


class PacedSource:
    """A live microphone's pace; what ``say`` queues, then silence. Records when each frame's
    read returned (the recorder's frame index is the read count: nothing mutes it)."""

    name = "paced"

    def __init__(self) -> None:
        self.queue: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.read_at: list[float] = []
        self.next_at = 0.0
        self.running = True

    def say(self, samples: np.ndarray) -> None:
        pad = (-len(samples)) % FRAME_SAMPLES
        samples = np.concatenate([samples, np.zeros(pad, np.int16)])
        with self.lock:
            self.queue.extend(samples.reshape(-1, FRAME_SAMPLES))

    def start(self) -> None:
        self.next_at = time.monotonic() + FRAME_S

    def stop(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        if not self.running:
            return None
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at += FRAME_S
        with self.lock:
            frame = self.queue.pop(0) if self.queue else np.zeros(FRAME_SAMPLES, np.int16)
        self.read_at.append(time.monotonic())
        return frame

    def close(self) -> None:
        pass


class TimedSpeaker:
    """An output that plays in real time and notes when each answer's first and last
    samples were written."""

    def __init__(self) -> None:
        self.first: list[float] = []
        self.last: list[float] = []
        self.last_written = 0.0
        self._fresh = False

    def begin(self) -> None:
        self._fresh = True

    def write(self, samples: np.ndarray) -> None:
        if self._fresh:
            self.first.append(time.monotonic())
            self._fresh = False
        time.sleep(len(samples) / 16000)
        self.last_written = time.monotonic()

    def end(self) -> None:
        self.last.append(self.last_written)

    def close(self) -> None:
        pass


def serve(files: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = files.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


async def turns(port: int, key: str, source: PacedSource, speaker: TimedSpeaker,
                gate_open: Any, url: str, answer: np.ndarray,
                detections: list[Any]) -> dict[str, list[float]]:
    from aioesphomeapi import APIClient, VoiceAssistantEventType

    ev = VoiceAssistantEventType
    client = APIClient("127.0.0.1", port, None, noise_psk=key, client_info="assist bench")
    await client.connect(login=True)
    starts: list[float] = []  # each turn's request, follow-ups included
    first_audio: list[float] = []
    stopped: list[bool] = []
    finished: list[bool] = []

    async def start(*_args: Any) -> int:
        starts.append(time.monotonic())
        return 0

    async def stop(_abort: bool) -> None:
        stopped.append(True)

    async def audio(_data: bytes, _data2: bytes | None = None) -> None:
        if len(first_audio) < len(starts):
            first_audio.append(time.monotonic())

    async def played(_msg: Any) -> None:
        finished.append(True)

    client.subscribe_voice_assistant(handle_start=start, handle_stop=stop, handle_audio=audio,
                                     handle_announcement_finished=played)

    async def until(cond: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("a turn did not complete")
            await asyncio.sleep(0.005)

    await asyncio.sleep(1.0)  # the subscription reaches the device
    out: dict[str, list[float]] = {"first_audio_ms": [], "url_playback_ms": [],
                                   "stream_playback_ms": [], "answer_end_ungated_ms": [],
                                   "answer_end_follow_up_ms": []}
    request = synth.speak("turn on the kitchen lights")
    n = k = 0  # wake turns, all turns
    for _model, text in PHRASES.items():
        wake = synth.speak(text)
        for i in range(TURNS_EACH):
            n += 1
            k += 1
            source.say(synth.concat([synth.silence(0.5), wake, synth.silence(0.3), request,
                                     synth.silence(1.5)]))
            await until(lambda n=n, k=k: len(stopped) >= k and len(detections) >= n)
            det = detections[n - 1]
            out["first_audio_ms"].append((first_audio[k - 1] - source.read_at[det]) * 1000)
            answered = len(speaker.first)
            if i % 2 == 0:  # by URL, as HA without a stream
                sent = time.monotonic()
                client.send_voice_assistant_event(ev.VOICE_ASSISTANT_TTS_END, {"url": url})
                client.send_voice_assistant_event(ev.VOICE_ASSISTANT_RUN_END, {})
                key_ = "url_playback_ms"
            else:  # streamed, and HA wants to hear more (continue-conversation)
                client.send_voice_assistant_event(ev.VOICE_ASSISTANT_INTENT_END, {
                    "conversation_id": f"c{n}", "continue_conversation": "1"})
                sent = time.monotonic()
                client.send_voice_assistant_event(ev.VOICE_ASSISTANT_TTS_STREAM_START, {})
                for s in range(0, len(answer), 512):
                    client.send_voice_assistant_audio(answer[s:s + 512].tobytes())
                client.send_voice_assistant_event(ev.VOICE_ASSISTANT_TTS_STREAM_END, {})
                client.send_voice_assistant_event(ev.VOICE_ASSISTANT_RUN_END, {})
                key_ = "stream_playback_ms"
            await until(lambda n=n: len(finished) >= n)
            out[key_].append((speaker.first[answered] - sent) * 1000)
            if key_ == "url_playback_ms":
                opened = await asyncio.to_thread(gate_open)
                out["answer_end_ungated_ms"].append((opened - speaker.last[-1]) * 1000)
            else:  # the follow-up: heard nothing, it ends on the no-speech timeout
                k += 1
                await until(lambda k=k: len(starts) >= k and len(stopped) >= k)
                out["answer_end_follow_up_ms"].append((starts[k - 1] - speaker.last[-1]) * 1000)
    await client.disconnect()
    return out


def latency() -> dict[str, Any]:
    from edge.assist.keys import key_path, read_key

    state = tempfile.mkdtemp(prefix="assist-bench-")
    from tests.fixtures.mqtt import free_port

    cfg = replace(Config(), state_dir=state,
                  assist=AssistConfig(mode="esphome", host="127.0.0.1", port=free_port(),
                                      name="bench"),
                  wake=replace(Config().wake, models=list(PHRASES)))
    source, speaker = PacedSource(), TimedSpeaker()
    device = build_device(cfg, source, Seams(
        chime_output=FakeChime(), systemd=lambda _models: None, speaker=speaker,
        device_id="0123456789abcdef"))
    assert device.assist is not None
    detections: list[int] = []

    def on_event(event: Any) -> None:
        if isinstance(event, DetectionEvent) and not event.ignored:
            detections.append(event.detection.frame_index)

    device.daemon.bus.subscribe("bench", on_event)
    recorder = device.daemon.recorder  # read only: whether detection is gated

    def gate_open() -> float:
        """When the first frame that counts again was read."""
        until = recorder._gate_until  # noqa: SLF001 - a bench's look, read only
        while len(source.read_at) <= until:
            time.sleep(0.002)
        return source.read_at[until]

    answer = synth.speak("turned on the kitchen lights")
    server = serve({"/api/tts_proxy/answer.wav": encode_wav(answer, 16000)})
    url = f"http://127.0.0.1:{server.server_address[1]}/api/tts_proxy/answer.wav"
    loop = threading.Thread(target=device.daemon.run, kwargs={"install_signals": False})
    loop.start()
    try:
        key = read_key(key_path(cfg))
        assert key is not None
        return asyncio.run(turns(device.assist.port, key, source, speaker, gate_open, url,
                                 answer, detections))
    finally:
        source.running = False
        device.daemon.stop()
        loop.join(60)
        server.shutdown()


def peak_rss_mb(assist: bool) -> float:
    """``edge run`` on a WAV of one turn, assist off or on: the child's peak RSS."""
    work = Path(tempfile.mkdtemp(prefix="assist-rss-"))
    wav = work / "turn.wav"
    wav.write_bytes(encode_wav(synth.concat([
        synth.silence(1.0), synth.speak("hey jarvis"), synth.silence(0.3),
        synth.speak("turn on the kitchen lights"), synth.silence(2.0)]), 16000))
    from tests.fixtures.mqtt import free_port

    conf = work / "edge.toml"
    conf.write_text(f'state_dir = "{work / "state"}"\n[audio]\noutput = "none"\n'
                    + (f'[assist]\nmode = "esphome"\nhost = "127.0.0.1"\nport = {free_port()}\n'
                       'name = "bench"\n' if assist else ""))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(conf), "--input",
                    str(wav), "-q"], check=True, cwd=ROOT, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        raise RuntimeError("the child's peak RSS was not above an earlier child's: run the "
                           "assist-off child first")
    return round(after / 1024, 1)


def main() -> int:
    off = peak_rss_mb(assist=False)  # the smaller first: ru_maxrss is the children's maximum
    on = peak_rss_mb(assist=True)
    lat = latency()
    rows = {name: {"n": len(xs), "median": pct(xs, 50), "p95": pct(xs, 95), "max": pct(xs, 100)}
            for name, xs in lat.items()}
    result = {
        "turns": sum(len(v) for k, v in lat.items() if k.endswith("playback_ms")),
        "latency_ms": rows,
        "peak_rss_mb": {"assist_off": off, "assist_on": on, "added": round(on - off, 1)},
        "targets": {"first_audio_ms_p95": TARGET_FIRST_AUDIO_MS,
                    "url_playback_ms_p95": TARGET_PLAYBACK_MS, "added_rss_mb": TARGET_RSS_MB},
    }
    met = {
        "first_audio": (rows["first_audio_ms"]["p95"] or 1e9) <= TARGET_FIRST_AUDIO_MS,
        "url_playback": (rows["url_playback_ms"]["p95"] or 1e9) <= TARGET_PLAYBACK_MS,
        "added_rss": on - off <= TARGET_RSS_MB,
    }
    result["met"] = met
    print(f"{'':28} {'n':>3} {'median':>8} {'p95':>8} {'max':>8}  (ms)")
    for name, r in rows.items():
        print(f"{name:28} {r['n']:>3} {r['median']:>8} {r['p95']:>8} {r['max']:>8}")
    print(f"peak RSS of edge run: assist off {off} MB, on {on} MB (+{on - off:.1f} MB)")
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    OUT.mkdir(exist_ok=True)
    (OUT / "assist.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
