"""Fault injection on the live daemon, each bounded in time.

For every fault: the daemon keeps listening (or stays safely muted), loses no clip
that was finished, says what happened, and recovers when the fault clears.
Faults tested elsewhere are listed in SECURITY.md ("Faults") with their tests.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from edge.activations.store import ActivationLog
from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource
from edge.config import AudioConfig, Config, OutputConfig, replace
from edge.errors import AudioDeviceError
from edge.upload.queue import Outbox
from tests.device import build
from tests.fixtures.audio import phrase
from tests.upload_helpers import mqtt_opts, upload_cfg
from tests.waiting import wait_for

ROOT = Path(__file__).parent.parent


def wakes(n: int) -> np.ndarray:
    one = [synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
           phrase("turn on the kitchen lights"), synth.silence(3.0)]
    return synth.concat(one * n)


def frames_in(samples: np.ndarray) -> int:
    return -(-len(samples) // FRAME_SAMPLES)


class FaultySource(ArraySource):
    """A microphone that falls out at read ``lose_at`` and refuses to open ``refusals`` times.

    ``hooks`` run during the read of the given index (a fault changing mid-stream).
    """

    def __init__(self, samples: np.ndarray, lose_at: int | None = None, refusals: int = 0,
                 hooks: dict[int, Any] | None = None, endless: bool = False) -> None:
        super().__init__(samples, "faulty mic")
        self.lose_at = lose_at
        self.refusals = refusals
        self.hooks = dict(hooks or {})
        self.endless = endless
        self.reads = 0
        self.opens = 0
        self.lost = False

    def start(self) -> None:
        if self.lost:
            if self.refusals > 0:
                self.refusals -= 1
                raise AudioDeviceError("USB mic array: no such device (unplugged)")
            self.lost = False
        self.opens += 1
        super().start()

    def read(self) -> np.ndarray | None:
        index = self.reads
        if index == self.lose_at:
            self.lose_at = None
            self.lost = True
            raise AudioDeviceError("USB mic array: device disconnected (read error -19)")
        self.reads += 1
        hook = self.hooks.pop(index, None)
        if hook is not None:
            hook()
        frame = super().read()
        if frame is None and self.endless:
            return np.zeros(FRAME_SAMPLES, np.int16)
        return frame


class SkewClock:
    """The system clock, with a wall-clock offset a test can change (a jump)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def wall(self) -> float:
        return time.time() + self.skew

    def monotonic(self) -> float:
        return time.monotonic()

    def jump(self, seconds: float) -> Any:
        return lambda: setattr(self, "skew", self.skew + seconds)


def local_cfg(tmp_path: Path) -> Config:
    return Config(state_dir=str(tmp_path / "state"), output=OutputConfig(keep_local=True))


def clip_ids(cfg: Config) -> list[str]:
    return sorted(p.stem for p in cfg.under_state("clips").glob("*.json"))




# -- the audio device disappears and comes back ------------------------------------------

def test_a_mic_that_falls_out_between_wakes_is_reopened_and_no_clip_is_lost(tmp_path, caplog,
                                                                          store):
    stream = wakes(2)
    half = frames_in(wakes(1))
    cfg = replace(local_cfg(tmp_path), audio=AudioConfig(reopen_max_backoff_s=0.1))
    source = FaultySource(stream, lose_at=half, refusals=3)
    daemon = build(cfg, source).daemon
    with caplog.at_level(logging.WARNING):
        daemon.run(install_signals=False)
    assert daemon.recorder.stats.clips == 2  # one before the loss, one after the return
    assert len(clip_ids(cfg)) == 2
    assert daemon.runner.reopen_attempts == 4 and source.opens == 2
    assert daemon.recorder.stats.frames == frames_in(stream)  # every frame heard
    said = caplog.text
    assert "audio device lost (USB mic array: device disconnected" in said
    assert "audio device reopened after 4 attempt(s)" in said


# -- the wall clock jumps ------------------------------------------------------------------

def test_wall_clock_jumps_back_and_forward_change_no_clip_and_no_listening_time(
        tmp_path, caplog, store):
    clock = SkewClock()
    stream = wakes(3)
    third = frames_in(wakes(1))
    source = FaultySource(stream, hooks={third: clock.jump(-86400.0),
                                         2 * third: clock.jump(400 * 86400.0)})
    cfg = local_cfg(tmp_path)
    device = build(cfg, source, clock=clock)
    daemon, watch = device.daemon, device.clockwatch
    with caplog.at_level(logging.WARNING):
        daemon.run(install_signals=False)
    assert daemon.recorder.stats.clips == 3 and len(clip_ids(cfg)) == 3
    assert [round(j) for j in watch.jumps] == [-86400, 400 * 86400]
    assert "wall clock jumped back by 86400 s" in caplog.text
    assert "wall clock jumped forward by 34560000 s" in caplog.text
    with ActivationLog.open(cfg.under_state("activations.sqlite3"), create=False) as log_:
        rows = log_.rows()
        periods = log_.periods()
    assert len(rows) == 3
    times = [r["wall_time"] for r in rows]
    assert times[1] < times[0] < times[2]  # stamps follow the clock...
    # ...but listening time is the audio's, whatever the clock did
    heard = sum(p.heard_s for p in periods)
    assert heard == pytest.approx(frames_in(stream) * 0.08, abs=0.2)


def test_the_uploader_is_not_stalled_by_the_clock_jumping_back(mosquitto_broker,
                                                              mqtt_collector, tmp_path):
    """A failed upload waits a backoff; a clock set back a day must not make it a day."""
    broker = mosquitto_broker(persistence=True)
    col = mqtt_collector(broker, "edge-recorder/#", session="jump-collector")
    broker.stop()
    clock = SkewClock()
    cfg = upload_cfg(tmp_path, "mqtt", mqtt=mqtt_opts(broker))
    source = FaultySource(wakes(1), endless=True)
    device = build(cfg, source, clock=clock, upload_drain_s=20)
    plugin, daemon = device.upload, device.daemon
    t = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert wait_for(lambda: plugin.uploader is not None and plugin.uploader.failures >= 2)
        clock.jump(-86400.0)()  # NTP, or a person, sets the clock back a day
        broker.start()
        msgs = col.wait_for(1, timeout=20)
        assert len(msgs) == 1, "the upload waited for the clock to catch up"
    finally:
        daemon.stop()
        t.join(60)


# -- the broker goes down and up, repeatedly ----------------------------------------------

def test_broker_restarting_again_and_again_loses_no_clip(mosquitto_broker, mqtt_collector,
                                                         tmp_path, caplog, store):
    n = 5
    broker = mosquitto_broker(persistence=True)
    col = mqtt_collector(broker, "edge-recorder/#", session="restart-collector")
    cfg = upload_cfg(tmp_path, "mqtt", mqtt=mqtt_opts(broker))
    restarts: list[threading.Thread] = []
    one_at_a_time = threading.Lock()

    def restart() -> None:
        # down now, before this wake's clip is finished (a few frames on); up 2 s later
        one_at_a_time.acquire()
        broker.stop()

        def go() -> None:
            time.sleep(2.0)
            broker.start()
            one_at_a_time.release()

        th = threading.Thread(target=go)
        restarts.append(th)
        th.start()

    one = frames_in(wakes(1))
    # the broker restarts in every wake's request, i.e. while a clip is being made or sent
    hooks = {i * one + 40: restart for i in range(n)}
    source = FaultySource(wakes(n), hooks=hooks, endless=True)
    device = build(cfg, source, upload_drain_s=20)
    plugin, daemon = device.upload, device.daemon
    t = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    with caplog.at_level(logging.INFO):
        t.start()
        try:
            assert wait_for(lambda: daemon.recorder.stats.clips == n, 60)
            for th in restarts:
                th.join(30)
            msgs = col.wait_for(n, timeout=60)
            assert wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == 0)
        finally:
            daemon.stop()
            t.join(60)
    assert broker.starts == n + 1
    ids = [m.user_properties["id"] for m in msgs]
    assert len(set(ids)) == n  # every clip arrived (a re-send after a lost PUBACK may repeat)
    assert "upload to mqtt://" in caplog.text and "failed" in caplog.text
    assert "works again" in caplog.text


# -- the disk fills up --------------------------------------------------------------------

def test_a_full_disk_keeps_the_device_listening_and_the_clip_waits_for_space(tmp_path):
    """The state directory is a 4 MB tmpfs (in a private mount namespace, via unshare),
    filled to the last byte; the owner frees space after the first clip met it."""
    state = tmp_path / "state"
    state.mkdir()
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed: scripts/apt-deps.sh installs it"
    cmd = [unshare, "-rm", "sh", "-c",
           f'mount -t tmpfs -o size=4m tmpfs "{state}" && '
           f'exec "{sys.executable}" -m tests.fault_disk_full "{state}"']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    said = "\n".join(r["log"])
    assert r["frames_heard"] == r["frames_total"]  # it never stopped listening
    assert r["detections"] == r["clips_made"] == 3
    assert r["freed"]["failed_before"] >= 1  # the first clip really met a full disk
    # ...and waited in memory until there was room: no clip lost, no temp file left
    assert r["dispatcher"]["lost"] == 0 and r["dispatcher"]["retried"] >= 1
    assert len(r["clip_files"]) == 6
    assert all(f.endswith((".wav", ".json")) for f in r["clip_files"])
    assert r["activation_rows"] == 3
    assert "No space left on device" in said and "kept in memory" in said
    assert "on a later try: the fault has cleared" in said
    assert "activation log" in said and "database or disk is full" in said


# -- a receiver that stops answering -----------------------------------------------------

def test_a_receiver_that_stops_answering_times_out_and_the_clip_waits(https_receiver, tmp_path,
                                                                      caplog):
    """The receiver takes the connection but reads at 100 bytes/s and never answers in
    time: the attempt fails after ``timeout_s``, says so, and the clip stays queued until
    the receiver is well again."""
    from edge.config import HttpsUploadConfig
    from edge.upload.senders.https import HttpsSender
    from tests.upload_helpers import DEVICE, errors, rigs

    rx = https_receiver(rate=100.0)
    with rigs(tmp_path, lambda **kw: HttpsSender(HttpsUploadConfig(**kw), DEVICE)) as make:
        r = make(url=rx.url, ca=str(rx.ca_path), timeout_s=1.0)
        started = time.monotonic()
        clips = r.put(1)
        r.wait_failures(1)
        assert time.monotonic() - started < 30  # bounded by timeout_s, not by the receiver
        assert r.outbox.count() == 1
        assert wait_for(lambda: errors(caplog, "upload to"), 10)  # logged after counting
        [msg] = errors(caplog, "upload to")
        assert "timed out" in msg and "queued clips are kept" in msg
        rx.rate = 0.0  # the receiver recovers
        r.wait_empty(timeout=30)
    assert rx.ok_bodies() == clips


# -- SIGKILL at random moments, on the whole daemon ---------------------------------------

def check_state_after_kill(state: Path) -> dict[str, int]:
    """What a restart finds must be whole: each clip a readable WAV of its stated length,
    the outbox readable entry by entry, the activation log intact."""
    clips = state / "clips"
    sidecars = sorted(clips.glob("*.json")) if clips.exists() else []
    for meta_path in sidecars:
        meta = json.loads(meta_path.read_text())
        info = sf.info(str(meta_path.with_suffix(".wav")))
        assert info.frames == round(meta["duration_s"] * 16000), meta_path.name
    outbox = Outbox(state / "outbox")
    try:
        for entry in outbox.pending():
            assert outbox.read(entry)
        queued = outbox.count()
        assert outbox.quarantined == 0
    finally:
        outbox.close()
    rows = 0
    if (state / "activations.sqlite3").exists():  # killed before it was made: nothing to check
        with ActivationLog.open(state / "activations.sqlite3", create=False) as log_:
            assert log_.integrity() == "ok"
            rows = len(log_.rows())
    return {"clips": len(sidecars), "queued": queued, "rows": rows}


def test_sigkill_at_random_moments_leaves_whole_clips_and_loses_no_upload(
        mosquitto_broker, mqtt_collector, tmp_path, store):
    broker = mosquitto_broker(persistence=True)
    col = mqtt_collector(broker, "edge-recorder/#", session="kill-collector")
    audio = tmp_path / "six-wakes.wav"
    sf.write(str(audio), wakes(6), 16000, subtype="PCM_16")
    state = tmp_path / "state"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'state_dir = "{state}"\n[upload]\nmode = "mqtt"\nretry_min_s = 0.05\n'
                   f'retry_max_s = 0.2\n[upload.mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                   'tls = false\ntimeout_s = 5.0\n'
                   # an uploading device must have a recording light: a simulated one
                   '[hardware]\nprofile = "generic-usb"\npin_factory = "mock"\n'
                   'mute_pin = "none"\nbutton_pin = "none"\nchime = false\n'
                   '[security]\nallow_simulated_pins = true\nallow_silent_recording = true\n')
    cmd = [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--input", str(audio)]
    rng = random.Random(10)
    seen: list[dict[str, int]] = []
    for _ in range(6):
        # at real-time pace a clip ends every ~6.6 s: a kill lands at start-up, mid-stream,
        # mid-clip, mid-write or mid-upload
        proc = subprocess.Popen([*cmd, "--realtime"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 12.0))
        proc.kill()
        proc.wait(10)
        seen.append(check_state_after_kill(state))
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    after = check_state_after_kill(state)
    assert after["queued"] == 0  # the last run sent everything the killed ones had queued
    local = {p.stem for p in (state / "clips").glob("*.json")}
    assert len(local) >= 6
    got = col.wait_for(len(local), timeout=30)
    # every clip finished and written locally was also uploaded (none lost by a kill)
    assert local <= {m.user_properties["id"] for m in got}
    print("after each kill:", seen)
    assert any(s["clips"] for s in seen), "no kill came after a clip was finished"


# -- a GPIO error mid-run ------------------------------------------------------------------

def test_a_recording_light_that_fails_mid_run_mutes_the_device_and_says_why(tmp_path, factory,
                                                                            caplog, store):
    """The LED's GPIO write fails after the first clip: the device must not record unseen,
    so it mutes (the clip in progress is discarded), shows the error look where it can,
    names the key in the log; the finished clip is kept. A restart with the fault gone
    listens again."""
    from gpiozero.pins.mock import MockPin

    from edge.pipeline.events import HardwareFault, State
    from tests.fixtures.hardware import make_rig

    class FlakyLed(MockPin):
        broken = False

        def _set_state(self, value):  # type: ignore[no-untyped-def]
            if FlakyLed.broken:
                raise OSError("GPIO chip write failed (EIO)")
            super()._set_state(value)

    one = frames_in(wakes(1))
    rig = make_rig(tmp_path, wakes(3), factory,
                   before_start=lambda f: f.pin(27, pin_class=FlakyLed),
                   during={one: lambda: setattr(FlakyLed, "broken", True)})
    factory.pin(22).drive_low()  # the mute switch in the listening position
    with caplog.at_level(logging.ERROR):
        rig.run_until(lambda: bool(rig.of(HardwareFault))
                      and rig.daemon.recorder.state is State.MUTED)
    [fault] = rig.of(HardwareFault)
    assert fault.key == "hardware.leds" and "GPIO chip write failed" in fault.message
    assert "stays muted" in caplog.text and "hardware.leds" in caplog.text
    stats = rig.daemon.recorder.stats
    assert stats.clips == 1 and stats.by_reason.get("aborted_by_mute") == 1
    assert len(list((tmp_path / "state" / "clips").glob("*.json"))) == 1
    # the GPIO works again and the device is restarted: it listens and records
    FlakyLed.broken = False
    factory.reset()
    again = make_rig(tmp_path, wakes(1), factory)
    factory.pin(22).drive_low()
    again.run()
    wait_for(lambda: again.daemon.recorder.stats.clips == 1)
    assert not again.of(HardwareFault)
