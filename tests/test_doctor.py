"""``edge doctor`` against real parts: ALSA file-plugin PCMs, gpiozero's MockFactory, a real
Mosquitto with TLS, the real models and engine. Once healthy, then once with each fault.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli import main
from edge.config import Config, load_config
from edge.service.doctor import Doctor, Finding, Status, busy_audio
from tests.fixtures.hardware import states
from tests.fixtures.https import make_tls_files
from tests.fixtures.mqtt import TlsListener, free_port
from tests.fixtures.portaudio import FakeHost, FakeMic
from tests.fixtures.wake import wake_stream

Usage = namedtuple("Usage", "total used free")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_text(tmp_path: Path, **sections: str) -> str:
    base = {"top": f'state_dir = "{tmp_path / "state"}"\n',
            "audio": 'input = "edgemic"\n',
            # pulled down: the (simulated) switch reads listen, so the microphone is checked
            "hardware": 'profile = "generic-usb"\npin_factory = "mock"\nchime = false\n'
                        'mute_pull = "down"\n'}
    base.update(sections)
    top = base.pop("top")
    return top + "".join(f"[{name}]\n{body}" for name, body in base.items())


def cfg_from(tmp_path: Path, **sections: str) -> Config:
    return load_config(write_config(tmp_path / "config.toml", config_text(tmp_path, **sections)))


def only(findings: list[Finding], check: str) -> Finding:
    (f,) = [f for f in findings if f.check == check]
    return f


def doctor(cfg: Config, **kw: Any) -> Doctor:
    kw.setdefault("ntp", lambda: True)
    kw.setdefault("service", lambda: None)
    kw.setdefault("led_on_s", 0.0)
    return Doctor(cfg, **kw)


@pytest.fixture
def tls_broker(mosquitto_broker, tmp_path):
    files = make_tls_files(tmp_path / "tls", name="broker")
    return mosquitto_broker(tls=TlsListener(files.ca, files.cert, files.key)), files


# ---- healthy ------------------------------------------------------------------------------


def test_healthy_device_passes_every_check_through_the_cli(alsa, tls_broker, tmp_path, capsys):
    alsa.add("edgemic", wake_stream(3.0, at_s=0.1))
    broker, tls = tls_broker
    cfg = write_config(tmp_path / "config.toml", config_text(
        tmp_path,
        upload=f'mode = "mqtt"\n[upload.mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
               f'ca = "{tls.ca}"\n',
        # an uploading device on simulated pins without chimes: accepted only explicitly
        security='allow_simulated_pins = true\nallow_silent_recording = true\n'))
    assert main(["doctor", "--config", str(cfg), "--skip", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line[:4] in ("ok  ", "WARN")}
    for check in ("config", "models", "audio", "mute", "leds", "broker", "disk"):
        assert lines[check].startswith("ok"), out
    assert "'edgemic'" in lines["audio"] and "dBFS" in lines["audio"]
    assert "GPIO22" in lines["mute"] and "listening" in lines["mute"]
    assert "TLSv1" in lines["broker"] and "certificate verified" in lines["broker"]
    assert "clock" in lines  # no systemd here to ask about NTP: a warning, not a failure
    assert "0 failed" in out


def test_json_output_is_one_object_per_check(alsa, tmp_path, capsys):
    alsa.add("edgemic", wake_stream(3.0, at_s=0.1))
    cfg = write_config(tmp_path / "config.toml", config_text(tmp_path))
    assert main(["doctor", "--config", str(cfg), "--json", "--only", "audio",
                 "--only", "disk"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["check"] for r in rows] == ["config", "audio", "disk"]
    assert {r["status"] for r in rows} == {"ok"}


def test_mute_switch_state_is_read_from_the_pin(factory, tmp_path):
    from gpiozero.pins.mock import MockPin

    class SwitchPin(MockPin):
        """A pin wired to a switch that holds it low (closed to ground) whatever the pull."""

        def _set_pull(self, value: str) -> None:
            super()._set_pull(value)
            self._change_state(False)

    factory.pin(22, pin_class=SwitchPin)
    f = only(doctor(cfg_from(tmp_path), pin_factory=factory).run(["mute"]), "mute")
    assert f.status is Status.OK
    assert "reads low: listening" in f.detail


def test_leds_are_lit_then_turned_off(factory, tmp_path):
    f = only(doctor(cfg_from(tmp_path), pin_factory=factory).run(["leds"]), "leds")
    assert f.status is Status.OK and "GPIO27" in f.detail
    states(factory.pin(27), [False, True, False])


def test_cpu_headroom_is_measured_on_the_real_engine(tmp_path):
    f = only(doctor(cfg_from(tmp_path), cpu_s=1.0).run(["cpu"]), "cpu")
    rtf = float(f.detail.split("real-time factor ")[1].split(":")[0])
    expected = Status.OK if rtf < 0.5 else Status.WARN if rtf < 0.8 else Status.FAIL
    assert f.status is expected
    assert "hey_jarvis" in f.detail and "1 s of audio" in f.detail


def test_busy_audio_keeps_the_idle_gate_open():
    frames = busy_audio(5.0)
    assert len(frames) == 62
    rms = np.sqrt(np.mean(np.concatenate(frames).astype(np.float64) ** 2)) / 32768
    assert 20 * np.log10(rms) > -45 + 20  # far above wake.idle_gate_dbfs


# ---- faults -------------------------------------------------------------------------------


def test_missing_microphone_fails_with_its_fix_and_a_non_zero_exit(alsa, tmp_path, capsys):
    cfg = write_config(tmp_path / "config.toml", config_text(tmp_path))
    assert main(["doctor", "--config", str(cfg), "--only", "audio"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  audio" in out and "edgemic" in out
    assert "fix: check the microphone is plugged in" in out
    assert "1 failed" in out


def test_silent_microphone_fails(alsa, tmp_path):
    alsa.add("edgemic", np.zeros(48000, np.int16))
    f = only(doctor(cfg_from(tmp_path)).run(["audio"]), "audio")
    assert f.status is Status.FAIL
    assert "digital silence" in f.detail and "alsamixer" in f.fix


def test_stalled_microphone_fails(tmp_path):
    mic = FakeMic("edgemic", wake_stream(3.0, at_s=0.1)[:, None], rate=16000, stalls_after=3)
    f = only(doctor(cfg_from(tmp_path), pa_factory=FakeHost([mic])).run(["audio"]), "audio")
    assert f.status is Status.FAIL
    assert "delivered no audio" in f.detail


class SlowHost(FakeHost):
    """A device whose driver delivers each 80 ms block only every 160 ms or later."""

    def __call__(self):  # type: ignore[no-untyped-def]
        pa = super().__call__()
        open_stream = pa.open

        def open_slow(**kw: Any) -> Any:
            callback = kw["stream_callback"]

            def late(*args: Any) -> Any:
                time.sleep(0.16)  # never sooner: the rate can only come out lower
                return callback(*args)

            return open_stream(**{**kw, "stream_callback": late})

        pa.open = open_slow
        return pa


def test_microphone_slower_than_real_time_fails(tmp_path):
    mic = FakeMic("edgemic", wake_stream(3.0, at_s=0.1)[:, None], rate=16000)
    f = only(doctor(cfg_from(tmp_path), pa_factory=SlowHost([mic]), audio_s=1.0).run(["audio"]),
             "audio")
    assert f.status is Status.FAIL
    assert "of real time" in f.detail and "audio.rate" in f.fix


def test_corrupt_and_missing_models_fail_and_the_cpu_check_says_why(store, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(store.directory, models, ignore=shutil.ignore_patterns(".staging*"))
    jarvis = models / store.manifest.entry("hey_jarvis").file
    data = bytearray(jarvis.read_bytes())
    data[100] ^= 0xFF
    jarvis.write_bytes(bytes(data))
    (models / store.manifest.entry("embedding").file).unlink()
    cfg = cfg_from(tmp_path, wake=f'models_dir = "{models}"\n')
    findings = doctor(cfg).run(["models", "cpu"])
    m, c = only(findings, "models"), only(findings, "cpu")
    assert m.status is Status.FAIL
    assert "hey_jarvis is corrupt" in m.detail and "embedding is missing" in m.detail
    assert "edge models fetch" in m.fix
    assert c.status is Status.FAIL and "models" in c.detail


def test_mute_pin_in_use_fails(factory, tmp_path):
    from gpiozero import DigitalOutputDevice

    holder = DigitalOutputDevice("GPIO22", pin_factory=factory)
    try:
        f = only(doctor(cfg_from(tmp_path), pin_factory=factory).run(["mute"]), "mute")
    finally:
        holder.close()
    assert f.status is Status.FAIL
    assert "hardware.mute_pin" in f.detail and "in use" in f.detail
    assert "hardware.mute_pin" in f.fix


def test_led_pin_in_use_fails_and_names_the_running_service(factory, tmp_path):
    from gpiozero import LED

    holder = LED("GPIO27", pin_factory=factory)
    try:
        f = only(doctor(cfg_from(tmp_path), pin_factory=factory, service=lambda: True)
                 .run(["leds"]), "leds")
    finally:
        holder.close()
    assert f.status is Status.FAIL
    assert "hardware.led_pins[0]" in f.detail
    assert f.fix.startswith("edge-recorder.service is running")


def test_untrusted_broker_certificate_fails(tls_broker, tmp_path):
    broker, _ = tls_broker
    other = make_tls_files(tmp_path / "other", name="other")
    cfg = cfg_from(tmp_path, upload=f'mode = "mqtt"\n[upload.mqtt]\nhost = "127.0.0.1"\n'
                                    f'port = {broker.port}\nca = "{other.ca}"\n')
    f = only(doctor(cfg).run(["broker"]), "broker")
    assert f.status is Status.FAIL
    assert "not trusted" in f.detail and "upload.mqtt.ca" in f.fix


def test_tls_to_a_plain_listener_fails(mqtt_broker, tmp_path):
    cfg = cfg_from(tmp_path, upload=f'mode = "mqtt"\n[upload.mqtt]\nhost = "127.0.0.1"\n'
                                    f'port = {mqtt_broker.port}\n')
    f = only(doctor(cfg).run(["broker"]), "broker")
    assert f.status is Status.FAIL
    assert "TLS handshake failed" in f.detail and "upload.mqtt.tls" in f.fix


def test_unreachable_broker_fails(tmp_path):
    cfg = cfg_from(tmp_path, mqtt=f'enabled = true\nhost = "127.0.0.1"\nport = {free_port()}\n'
                                  'tls = false\n')
    f = only(doctor(cfg).run(["broker"]), "broker")
    assert f.status is Status.FAIL
    assert "cannot connect" in f.detail and "mqtt.host" in f.fix


def test_full_disk_fails_with_the_outbox_bound_it_can_take(tmp_path):
    cfg = cfg_from(tmp_path, upload='mode = "mqtt"\noutbox_max_mb = 200\n'
                                    '[upload.mqtt]\nhost = "broker.example"\n')
    f = only(doctor(cfg, disk_usage=lambda _p: Usage(8e9, 7.85e9, 150e6)).run(["disk"]), "disk")
    assert f.status is Status.FAIL
    assert "150 MB free" in f.detail and "200 MB" in f.detail
    assert "outbox_max_mb to at most 50" in f.fix


def test_unset_clock_fails(tmp_path):
    f = only(doctor(cfg_from(tmp_path), now=lambda: 86400.0).run(["clock"]), "clock")
    assert f.status is Status.FAIL and "1970-01-02" in f.detail


def test_clock_behind_the_last_known_time_fails(tmp_path):
    stamp = tmp_path / "timesync-clock"
    stamp.touch()
    later = 1_900_000_000  # 2030
    os.utime(stamp, (later, later))
    f = only(doctor(cfg_from(tmp_path), last_known_time=[stamp]).run(["clock"]), "clock")
    assert f.status is Status.FAIL and "went backwards" in f.detail


def test_clock_not_synchronised_warns(tmp_path):
    f = only(doctor(cfg_from(tmp_path), ntp=lambda: False).run(["clock"]), "clock")
    assert f.status is Status.WARN and "not synchronised" in f.detail


def test_cpu_without_headroom_fails(tmp_path):
    ticks = iter([0.0, 10.0])  # the engine took 10 s for 5 s of audio
    f = only(doctor(cfg_from(tmp_path), perf=lambda: next(ticks)).run(["cpu"]), "cpu")
    assert f.status is Status.FAIL
    assert "real-time factor 2.016" in f.detail and "wake.models" in f.fix  # 10 s / 62 frames


def test_bad_config_is_a_failed_check(tmp_path, capsys):
    cfg = write_config(tmp_path / "config.toml", "[record]\nsilence_s = -1\n")
    assert main(["doctor", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  config" in out and "record.silence_s" in out and "fix:" in out


# ---- the mute switch is read before the microphone is opened --------------------------------


def test_the_doctor_never_opens_the_microphone_while_the_switch_says_mute(tmp_path):
    host = FakeHost([FakeMic("edgemic", wake_stream(3.0, at_s=0.1)[:, None], rate=16000)])
    cfg = cfg_from(tmp_path, hardware='profile = "generic-usb"\npin_factory = "mock"\n'
                                      'chime = false\n')  # pulled up: the switch reads mute
    findings = doctor(cfg, pa_factory=host).run(["audio", "mute"])
    audio = only(findings, "audio")
    assert audio.status is Status.WARN
    assert "mute position" in audio.detail and "microphone was not opened" in audio.detail
    assert "move the switch to listen" in audio.fix
    assert host.instances == []  # PortAudio was not even initialised
    assert "MUTED" in only(findings, "mute").detail


def test_an_unreadable_switch_keeps_the_microphone_closed(factory, tmp_path):
    from gpiozero import DigitalOutputDevice

    host = FakeHost([FakeMic("edgemic", wake_stream(3.0, at_s=0.1)[:, None], rate=16000)])
    holder = DigitalOutputDevice("GPIO22", pin_factory=factory)
    try:
        audio = only(doctor(cfg_from(tmp_path), pa_factory=host, pin_factory=factory)
                     .run(["audio"]), "audio")
    finally:
        holder.close()
    assert audio.status is Status.WARN and "cannot be read" in audio.detail
    assert host.instances == []


def test_the_microphone_is_checked_when_the_switch_says_listen(tmp_path):
    host = FakeHost([FakeMic("edgemic", wake_stream(3.0, at_s=0.1)[:, None], rate=16000)])
    audio = only(doctor(cfg_from(tmp_path), pa_factory=host).run(["audio"]), "audio")
    assert audio.status is Status.OK and host.instances
