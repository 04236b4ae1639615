"""Live capture through PyAudio and PortAudio, reading real ALSA PCMs fed from known audio.

No sound card is needed: ALSA's file plugin serves each test PCM (tests/fixtures/alsa.py).
Sequences ALSA cannot stage (a busy device, overflows, a stall) use the fake PyAudio of
tests/fixtures/portaudio.py through the same ``pa_factory`` seam.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from edge.audio import portaudio, synth
from edge.audio.capture import PyAudioSource
from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from edge.clock import FakeClock
from edge.config import Config, OutputConfig, replace
from edge.errors import AudioDeviceError, AudioFormatError
from edge.pipeline.events import DetectionEvent, EventBus, RecordingStarted, State
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Runner
from edge.wake.policy import DetectionPolicy, ModelPolicy
from tests.fakes import Collector, LevelVad, ScriptedEngine
from tests.fixtures.alsa import AlsaConfig, stop_edge_run
from tests.fixtures.audio import phrase
from tests.fixtures.portaudio import FakeHost, FakeMic
from tests.waiting import wait_for

EDGE = [sys.executable, "-m", "edge"]
TONES = (300.0, 700.0, 1100.0, 1900.0)


def take(src: Any, n: int) -> np.ndarray:
    frames = [src.read() for _ in range(n)]
    assert all(f.dtype == np.int16 and f.shape == (FRAME_SAMPLES,) for f in frames)
    return np.concatenate(frames)


def frames_for(samples: int) -> int:
    return -(-samples // FRAME_SAMPLES)


def tone(freq: float, seconds: float, rate: int, amp: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spec)])


def level_at(x: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(spec[np.abs(freqs - hz) < 8].max())


def resampled(x: np.ndarray, rate: int) -> np.ndarray:
    """What a one-shot HQ resampler makes of int16 ``x`` at ``rate``, as int16 at 16 kHz."""
    y = soxr.resample(x.astype(np.float32) / 32768.0, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def at_rate(x: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz int16 ``x`` as a device at ``rate`` would hear it."""
    y = soxr.resample(x.astype(np.float32), SAMPLE_RATE, rate, quality="VHQ")
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


# ---- devices ---------------------------------------------------------------


def test_list_devices_shows_each_alsa_pcm_with_its_channels(alsa: AlsaConfig):
    alsa.add("edgemono", np.zeros(1600))
    alsa.add("edgequad", np.zeros((1600, 4)))
    devices = {d.name: d for d in portaudio.list_devices()}
    assert set(devices) == {"edgemono", "edgequad"}
    assert devices["edgemono"].channels == 1 and devices["edgequad"].channels == 4
    # a PCM that takes any rate reports PortAudio's first choice
    assert devices["edgequad"].default_rate == 44100
    assert portaudio.has_capture_device()


def test_no_capture_device_is_reported_as_none(alsa: AlsaConfig):
    assert portaudio.list_devices() == []
    assert not portaudio.has_capture_device()
    with pytest.raises(AudioDeviceError, match="no capture devices found"):
        portaudio.find_device("")


def test_a_device_is_found_by_default_index_exact_name_or_substring(alsa: AlsaConfig):
    alsa.add("edgemono", np.zeros(1600))
    alsa.add("edgemono-usb", np.zeros((1600, 2)), default=True)
    devices = {d.name: d for d in portaudio.list_devices()}
    assert portaudio.find_device("").name == "default"
    assert portaudio.find_device("").channels == 2
    assert portaudio.find_device(str(devices["edgemono-usb"].index)).name == "edgemono-usb"
    assert portaudio.find_device("EDGEMONO").name == "edgemono"  # exact beats substring
    assert portaudio.find_device("usb").name == "edgemono-usb"


def test_a_missing_device_error_names_it_and_lists_the_devices(alsa: AlsaConfig):
    alsa.add("edgemono", np.zeros(1600))
    alsa.add("edgequad", np.zeros((1600, 4)))
    src = PyAudioSource("studio-mic")
    with pytest.raises(AudioDeviceError) as err:
        src.start()
    msg = str(err.value)
    assert "'studio-mic'" in msg
    assert "'edgemono' (1 ch, 44100 Hz)" in msg and "'edgequad' (4 ch, 44100 Hz)" in msg
    assert not src.capturing
    with pytest.raises(AudioDeviceError, match="ambiguous.*edgemono.*edgequad"):
        portaudio.find_device("edge")
    with pytest.raises(AudioDeviceError, match="no capture device has index 9.*edgemono"):
        portaudio.find_device("9")


def test_a_channel_the_device_lacks_is_a_clear_error(alsa: AlsaConfig):
    alsa.add("edgequad", np.zeros((1600, 4)))
    with pytest.raises(AudioFormatError, match="edgequad.*channel 4 .*4 channels"):
        PyAudioSource("edgequad", channel=4).check()


def test_edge_devices_lists_the_alsa_test_pcm(alsa: AlsaConfig):
    alsa.add("edgequad", np.zeros((1600, 4)))
    out = subprocess.run([*EDGE, "devices"], capture_output=True, text=True, timeout=120,
                         env=alsa.env)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert rows == [["0", "4", "44100", "edgequad"]]
    assert "ALSA lib" not in out.stderr  # PortAudio's probing noise is held back


def test_edge_devices_says_so_when_there_is_none(alsa: AlsaConfig):
    out = subprocess.run([*EDGE, "devices"], capture_output=True, text=True, timeout=120,
                         env=alsa.env)
    assert out.returncode == 1
    assert out.stdout.strip() == "no capture devices found"


def test_edge_run_with_a_missing_device_fails_in_one_line(alsa: AlsaConfig, tmp_path: Path):
    alsa.add("edgemono", np.zeros(1600))
    out = subprocess.run([*EDGE, "run", "--input", "studio-mic"], capture_output=True, text=True,
                         timeout=120, env={**alsa.env, "STATE_DIRECTORY": str(tmp_path)})
    assert out.returncode == 2
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("edge: error:")]
    assert "'studio-mic'" in line and "'edgemono'" in line
    assert "Traceback" not in out.stderr


# ---- what is captured ----------------------------------------------------------


def test_mono_capture_at_16k_is_the_wav_sample_for_sample(alsa: AlsaConfig, wav):
    speech = phrase("hey jarvis, what time is it")
    alsa.add_wav("edgemono", wav(speech, "speech.wav"))
    src = PyAudioSource("edgemono", rate=16000)
    src.start()
    assert src.capturing
    got = take(src, frames_for(len(speech)))
    src.close()
    assert np.array_equal(got[:len(speech)], speech)
    assert not got[len(speech):].any()
    assert src.overflows == 0
    assert not src.capturing


def test_the_native_rate_is_used_and_resampled_to_16k(alsa: AlsaConfig, wav):
    x = at_rate(phrase("hey jarvis, what time is it"), 44100)
    alsa.add_wav("edgemono", wav(x, "speech44k.wav", rate=44100))
    src = PyAudioSource("edgemono")  # rate 0: the device's own, 44.1 kHz here
    src.start()
    got = take(src, frames_for(len(x) * 16000 // 44100))
    src.close()
    want = resampled(x, 44100)
    n = min(len(want), len(got)) - FRAME_SAMPLES
    err = got[:n].astype(np.int32) - want[:n]
    assert np.abs(err).max() <= 2  # the streaming resampler is the one-shot one, to rounding
    assert np.corrcoef(got[:n], phrase("hey jarvis, what time is it")[:n])[0, 1] > 0.99


def test_four_channel_48k_capture_keeps_the_chosen_channel(alsa: AlsaConfig):
    rate = 48000
    quad = np.stack([tone(f, 2.0, rate) for f in TONES], axis=1)
    alsa.add("edgequad", quad, rate=rate)
    for ch, hz in enumerate(TONES):
        src = PyAudioSource("edgequad", channel=ch, rate=rate)
        src.start()
        got = take(src, 20)  # 1.6 s
        src.close()
        assert dominant_hz(got) == pytest.approx(hz, abs=1.0)  # right channel, right rate
        want = resampled(quad[:, ch], rate)[:len(got)]
        body = slice(FRAME_SAMPLES, len(got) - FRAME_SAMPLES)
        assert np.corrcoef(got[body], want[body])[0, 1] > 0.999
        others = [level_at(got, f) for f in TONES if f != hz]
        assert max(others) < level_at(got, hz) / 1000


def test_all_channels_are_averaged_when_none_is_chosen(alsa: AlsaConfig):
    rate = 48000
    alsa.add("edgequad", np.stack([tone(f, 2.0, rate) for f in TONES], axis=1), rate=rate)
    src = PyAudioSource("edgequad", rate=rate)
    src.start()
    got = take(src, 20)
    src.close()
    levels = [level_at(got, f) for f in TONES]
    assert max(levels) / min(levels) < 1.05
    single = level_at(tone(TONES[0], 1.6, SAMPLE_RATE), TONES[0])
    assert levels[0] == pytest.approx(single / 4, rel=0.05)


# ---- the full pipeline -----------------------------------------------------------


def test_hey_jarvis_captured_through_alsa_makes_a_detection_and_a_clip(alsa: AlsaConfig,
                                                                       store, tmp_path: Path):

    wake = phrase("hey jarvis")
    stream16 = synth.concat([synth.silence(1.5), wake, synth.silence(0.3),
                             phrase("what is the weather like today"), synth.silence(2.0)])
    word_end = 1.5 + len(wake) / SAMPLE_RATE
    rate = 44100  # a stereo USB microphone at its own rate, both channels averaged
    x = at_rate(stream16, rate)
    alsa.add("usbmic", np.stack([x, x], axis=1), rate=rate)

    cfg = replace(Config(), state_dir=str(tmp_path / "state"), output=OutputConfig())
    source = PyAudioSource("usbmic")
    from tests.device import build

    daemon = build(cfg, source).daemon
    events = Collector()
    daemon.bus.subscribe("test", events)
    limit = frames_for(len(stream16)) + 30
    frames = [0]

    def count() -> None:
        frames[0] += 1
        if frames[0] >= limit:
            daemon.stop()

    daemon.on_frame.append(count)
    daemon.run(install_signals=False)

    dets = [e for e in events.events if isinstance(e, DetectionEvent)]
    assert len(dets) == 1 and dets[0].detection.model == "hey_jarvis"
    assert word_end - 0.3 <= dets[0].detection.t <= word_end + 0.5
    assert [type(e) for e in events.events].count(RecordingStarted) == 1
    clips = sorted((tmp_path / "state" / "clips").rglob("*.wav"))
    assert len(clips) == 1
    assert daemon.recorder.stats.by_reason == {"silence": 1}
    assert source.overflows == 0 and not source.capturing


def test_edge_run_input_device_records_a_clip_until_sigterm(alsa: AlsaConfig, store,
                                                             tmp_path: Path):
    stream = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                           phrase("turn on the kitchen lights"), synth.silence(2.0)])
    alsa.add("usbmic", at_rate(stream, 44100), rate=44100)  # opened at its default, 44.1 kHz
    state = tmp_path / "state"
    proc = subprocess.Popen([*EDGE, "run", "--input", "usbmic"], stderr=subprocess.PIPE,
                            text=True, env={**alsa.env, "STATE_DIRECTORY": str(state)})
    try:
        wait_for(lambda: proc.poll() is not None or list((state / "clips").rglob("*.wav")),
                 120, "a clip from `edge run`", poll_s=0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        err = stop_edge_run(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(list((state / "clips").rglob("*.wav"))) == 1
    assert "capturing from 0 'usbmic' (1 ch, 44100 Hz)" in err


# ---- mute, loss and recovery -------------------------------------------------------


def fake_recorder() -> tuple[Recorder, EventBus]:
    bus = EventBus()
    rec = Recorder(ScriptedEngine(), DetectionPolicy([ModelPolicy("m", 0.5)]), LevelVad(),
                   Config().record, 1.5, bus, lambda clip: None, FakeClock())
    return rec, bus


def test_mute_really_stops_the_alsa_stream_and_unmute_restarts_it(alsa: AlsaConfig):
    alsa.add("edgemono", tone(440.0, 1.0, 16000), tail_s=120)
    src = PyAudioSource("edgemono")
    rec, bus = fake_recorder()
    runner = Runner(src, rec)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_for(lambda: rec.stats.frames >= 5 and src.capturing, what="capture")
        runner.post(lambda r: r.mute())
        wait_for(lambda: rec.state is State.MUTED and not src.capturing, what="mute")
        assert src._stream is None and src._pa is None  # stream closed, PortAudio released
        frames = rec.stats.frames
        runner.post(lambda r: r.unmute())
        wait_for(lambda: rec.stats.frames >= frames + 5, what="capture after unmute")
        assert src.capturing and src.opens == 2
    finally:
        runner.stop()
        thread.join(timeout=30)
        bus.close()
    assert not thread.is_alive() and not src.capturing


class Unpluggable:
    """A ``pa_factory`` over the real PyAudio whose ``unplug`` acts like pulling a USB mic.

    The running stream's callback is answered with paAbort, so PortAudio itself stops
    the stream, as it does when ALSA reports the device gone; and the PCM's infile
    disappears, so it no longer opens until ``alsa.restore``.
    """

    def __init__(self, alsa: AlsaConfig, name: str) -> None:
        self.alsa = alsa
        self.name = name
        self.unplugged = threading.Event()

    def __call__(self) -> Any:
        import pyaudio

        factory = self

        class PortAudio(pyaudio.PyAudio):  # type: ignore[misc]
            def open(self, *args: Any, stream_callback: Any = None, **kw: Any) -> Any:
                def gated(*cb: Any) -> Any:
                    return (None, pyaudio.paAbort) if factory.unplugged.is_set() \
                        else stream_callback(*cb)

                return super().open(*args, stream_callback=gated, **kw)

        return PortAudio()

    def unplug(self) -> None:
        self.alsa.remove(self.name)
        self.unplugged.set()

    def plug(self) -> None:
        self.alsa.restore(self.name)
        self.unplugged.clear()


def test_a_vanished_alsa_device_is_reopened_with_backoff(alsa: AlsaConfig, caplog):
    caplog.set_level(logging.INFO)
    alsa.add("usbmic", tone(440.0, 1.0, 16000), tail_s=120)
    usb = Unpluggable(alsa, "usbmic")
    src = PyAudioSource("usbmic", pa_factory=usb)
    rec, bus = fake_recorder()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the runner's backoff, without the waiting
        sleeps.append(seconds)
        if len(sleeps) == 3:
            usb.plug()

    def on_frame() -> None:
        if rec.stats.frames == 10:
            usb.unplug()
        if rec.stats.frames == 40:
            runner.stop()

    runner = Runner(src, rec, on_frame=[on_frame], sleep=sleep)
    runner.run()
    bus.close()
    assert rec.stats.frames == 40  # it kept going, no crash
    assert sleeps == [0.5, 1.0, 2.0]
    assert runner.reopen_attempts == 3 and src.opens == 2
    lost = [r.getMessage() for r in caplog.records if "audio device lost" in r.getMessage()]
    assert len(lost) == 3
    assert "usbmic stopped" in lost[0]
    assert "no capture device matches 'usbmic'" in lost[1]  # gone from PortAudio's list
    assert any("reopened after 3 attempt(s)" in r.getMessage() for r in caplog.records)
    assert not src.capturing


def test_a_device_that_disappears_and_returns_keeps_the_runner_going():
    mic = FakeMic("USB PnP Sound Device: Audio (hw:1,0)",
                  np.zeros((16000 * 3, 1), np.int16), rate=16000, dies_after=15)
    host = FakeHost([mic])
    src = PyAudioSource("usb pnp", pa_factory=host)
    rec, bus = fake_recorder()
    plan = itertools.cycle([[], [], [mic]])  # each time: gone for two attempts, then back

    def sleep(seconds: float) -> None:
        host.mics = next(plan)

    def on_frame() -> None:
        if rec.stats.frames == 60:
            runner.stop()

    runner = Runner(src, rec, on_frame=[on_frame], sleep=sleep, max_backoff_s=0.8)
    runner.run()
    bus.close()
    assert rec.stats.frames == 60
    # 15 frames, lost, back after 3 attempts, 15 frames, lost, ...: 4 opens for 60 frames
    assert src.opens == 4 and runner.reopen_attempts == 9
    assert all(pa.terminated for pa in host.instances)  # PortAudio released every time
    assert all(s.closed for s in host.streams)


def test_overflows_are_counted_and_logged_never_fatal(caplog):
    caplog.set_level(logging.WARNING)
    rate = 48000
    mic = FakeMic("mic", np.stack([tone(1000.0, 2.0, rate)] * 2, axis=1), rate=rate,
                  overflow_at={3, 7, 8})
    src = PyAudioSource("mic", pa_factory=FakeHost([mic]))
    src.start()
    got = take(src, 20)
    src.stop()
    assert src.overflows == 3
    assert dominant_hz(got) == pytest.approx(1000.0, abs=1.0)
    warnings = [r.getMessage() for r in caplog.records if "input overflow" in r.getMessage()]
    assert len(warnings) == 1 and "mic" in warnings[0]  # the first is logged, the rest counted


def test_a_busy_device_is_a_clear_error_naming_it():
    mic = FakeMic("USB mic", np.zeros((4800, 1), np.int16), open_error=-9985)
    src = PyAudioSource("usb", pa_factory=FakeHost([mic]))
    with pytest.raises(AudioDeviceError, match="'USB mic'.*busy"):
        src.start()
    assert not src.capturing


def test_a_stalled_device_is_reported_as_lost():
    mic = FakeMic("mic", np.zeros((16000, 1), np.int16), rate=16000, stalls_after=5)
    host = FakeHost([mic])
    src = PyAudioSource("mic", pa_factory=host, stall_timeout_s=0.3)
    src.start()
    take(src, 5)
    with pytest.raises(AudioDeviceError, match="mic delivered no audio"):
        take(src, 10)
    src.stop()
    assert host.streams[0].stopped and host.streams[0].closed and host.instances[0].terminated


def test_pyaudio_is_imported_only_when_capture_starts():
    code = ("import sys; import edge.audio.capture, edge.commands.run, edge.compose.daemon; "
            "print('pyaudio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ})
    assert out.stdout.strip() == "False", out.stderr
