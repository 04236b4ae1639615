"""The systemd unit: `systemd-analyze verify`, the exposure score, the settings that audio,
GPIO and the watchdog depend on, and the recorder running inside the unit's sandbox.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.commands.doctor import SYSTEM_CONFIG
from edge.errors import ConfigError
from tests.fixtures.https import make_tls_files
from tests.fixtures.mqtt import TlsListener
from tests.fixtures.sandbox import directives
from tests.fixtures.wake import wake_stream, write_wake_wav

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-recorder.service"
EDGE = Path(sys.executable).parent / "edge"
MAX_EXPOSURE = 3.0


def exposure(unit: Path) -> float:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(unit)], capture_output=True, text=True, cwd=unit.parent)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, f"no exposure level in the output:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1))


def test_unit_verifies(tmp_path):
    # verify checks that ExecStart exists: point a copy at a stand-in under tmp_path
    fake_opt = tmp_path / "opt" / "edge-recorder"
    edge = fake_opt / "venv" / "bin" / "edge"
    edge.parent.mkdir(parents=True)
    edge.write_text("#!/bin/sh\n")
    edge.chmod(0o755)
    copy = tmp_path / "edge-recorder.service"
    copy.write_text(UNIT.read_text().replace("/opt/edge-recorder", str(fake_opt)))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_exposure_score_is_at_most_3(tmp_path):
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE


def test_the_score_parser_sees_an_unhardened_unit(tmp_path):
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    assert exposure(bare) > 9.0


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return directives(UNIT.read_text())


def test_readiness_watchdog_and_restarts(unit):
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["20s"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StartLimitIntervalSec"] == ["0"]  # a mic unplugged for hours: keep trying


def test_the_sandbox_leaves_audio_gpio_and_spi_reachable(unit):
    assert "PrivateDevices" not in unit and "PrivateUsers" not in unit
    assert unit["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in unit["DeviceAllow"]}
    assert allowed == {"char-alsa", "char-gpiochip", "char-spi"}
    assert all(v.endswith(" rw") for v in unit["DeviceAllow"])
    assert unit["SupplementaryGroups"] == ["audio gpio spi"]
    assert "AF_UNIX" in unit["RestrictAddressFamilies"][0]  # journald and sd_notify


def test_hardening_and_directories(unit):
    for key, value in [("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("NoNewPrivileges", "yes"),
                       ("StateDirectory", "edge-recorder"),
                       ("ConfigurationDirectory", "edge-recorder"),
                       ("RuntimeDirectory", "edge-recorder"), ("LimitCORE", "0")]:
        assert unit[key] == [value], key
    # lgpio needs a writable working directory: the runtime directory is the one
    assert unit["WorkingDirectory"] == ["/run/edge-recorder"]
    assert "LG_WD=/run/edge-recorder" in unit["Environment"]
    assert unit["User"] == ["edge-recorder"]


def test_exec_start_matches_the_installer_and_the_doctor(unit):
    install = (REPO / "install.sh").read_text()
    (exec_start,) = unit["ExecStart"]
    assert exec_start == f"/opt/edge-recorder/venv/bin/edge run --config {SYSTEM_CONFIG}"
    assert "VENV=$OPT/venv" in install and "OPT=$ROOT/opt/$NAME" in install
    assert "CONFIG=$ETC/config.toml" in install and "ETC=$ROOT/etc/$NAME" in install


# ---- the program inside the unit's sandbox ------------------------------------------------
# No systemd runs here, so tests/fixtures/sandbox.py applies the unit's own SystemCallFilter
# (with its errno), RestrictAddressFamilies, MemoryDenyWriteExecute and ProtectSystem=strict (a
# read-only root file system; /tmp, where the tests keep state_dir, stays writable) to one
# process and execs the recorder in it. Not emulated: User=, DevicePolicy= and the Protect*=
# settings for /proc, /sys and the kernel, which need a booted systemd (and a Pi) to exercise.

SANDBOX = REPO / "tests" / "fixtures" / "sandbox.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # python3-seccomp is built for the distribution's Python


def sandboxed(unit: Path, *command: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, str(SANDBOX), str(unit), "--", *command],
                          capture_output=True, text=True, timeout=300, **kw)


def run_recorder(unit: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    state = tmp_path / "state"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'state_dir = "{state}"\n')
    proc = sandboxed(unit, str(EDGE), "run", "--config", str(cfg), "--input",
                     str(write_wake_wav(tmp_path / "wake.wav", request="what is the time")))
    return proc, sorted((state / "clips").glob("*.wav"))


# Outside /tmp (which the sandbox leaves writable for state) wherever the checkout lives:
# ProtectSystem=strict makes it read-only.
PROBE = Path("/usr/local/.edge-sandbox-probe")


def test_the_sandbox_enforces_the_units_filters(tmp_path):
    probe = ("import os, socket\n"
             "try:\n    os.chroot('/')\nexcept PermissionError:\n    print('chroot denied')\n"
             "try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n"
             "except OSError as e:\n    print('netlink', e.errno)\n"
             "socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close(); print('inet6 ok')\n"
             f"try:\n    open({str(PROBE)!r}, 'w')\n"
             "except OSError as e:\n    print('system', e.errno)\n")
    try:
        proc = sandboxed(UNIT, SYSTEM_PYTHON, "-c", probe)
        assert proc.stdout.split("\n")[:4] == ["chroot denied", "netlink 97", "inet6 ok",
                                               "system 30"], proc.stderr  # 30: EROFS
        assert not PROBE.exists()
    finally:
        PROBE.unlink(missing_ok=True)


def test_the_recorder_keeps_its_clip_inside_the_units_sandbox(store, tmp_path):
    proc, clips = run_recorder(UNIT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(clips) == 1
    assert " ERROR " not in proc.stderr, proc.stderr


def test_write_xor_execute_is_on_exactly_when_the_recorder_survives_it(store, tmp_path):
    """In-memory WAV encoding through cffi callbacks needs W+X memory, so the unit may only
    set MemoryDenyWriteExecute while the recorder really keeps its clip under W^X (it does
    since clips are encoded with the stdlib; see edge/audio/wav.py)."""
    strict = tmp_path / "strict.service"
    strict.write_text(UNIT.read_text().replace("[Service]\n",
                                               "[Service]\nMemoryDenyWriteExecute=yes\n"))
    proc, clips = run_recorder(strict, tmp_path)
    assert proc.returncode == 0, proc.stderr
    survives = len(clips) == 1
    assert ("MemoryDenyWriteExecute" in directives(UNIT.read_text())) == survives, proc.stderr
    if not survives:
        assert "Cannot allocate write+execute memory" in proc.stderr


def test_doctor_passes_inside_the_units_sandbox(alsa, mosquitto_broker, store, tmp_path):
    """Capture (PortAudio on an ALSA PCM), the models, the engine, mock GPIO and a TLS
    connection to a real Mosquitto, all under the unit's filters."""
    alsa.add("edgemic", wake_stream(3.0, at_s=0.1))
    tls = make_tls_files(tmp_path / "tls", name="broker")
    broker = mosquitto_broker(tls=TlsListener(tls.ca, tls.cert, tls.key))
    cfg = tmp_path / "doctor.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[audio]\ninput = "edgemic"\n'
                   '[hardware]\nprofile = "generic-usb"\npin_factory = "mock"\n'
                   'mute_pull = "down"\n'  # the switch reads listen: the doctor opens the mic
                   f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
                   f'ca = "{tls.ca}"\n')
    proc = sandboxed(UNIT, str(EDGE), "doctor", "--config", str(cfg), "--json",
                     "--cpu-seconds", "1")
    rows = {r["check"]: r for r in map(json.loads, proc.stdout.splitlines())}
    for check in ("config", "models", "audio", "mute", "leds", "broker", "disk"):
        assert rows[check]["status"] == "ok", rows[check]
    assert "TLSv1" in rows["broker"]["detail"]
    assert "real-time factor" in rows["cpu"]["detail"]


# ---- the IP deny install.sh adds while nothing leaves the device (systemd/no-network.conf) ----


def test_under_the_ip_deny_a_config_that_reaches_another_machine_is_refused(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n'
                   '[mqtt]\nenabled = true\nhost = "broker.lan"\n')
    env = {**os.environ, "EDGE_IP_DENIED": "1"}  # what the drop-in sets
    proc = subprocess.run([str(EDGE), "run", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "mqtt.host = 'broker.lan' is another machine" in line and "install.sh" in line


def test_the_ip_deny_is_for_configs_that_stay_on_this_machine():
    from edge.config import Config, HttpsUploadConfig, MqttConfig, UploadConfig
    from edge.service.network import check_network_allowed, remote_hosts

    denied = {"EDGE_IP_DENIED": "1"}
    local = Config(mqtt=MqttConfig(enabled=True, host="127.0.0.1"),
                   upload=UploadConfig(mode="https",
                                       https=HttpsUploadConfig(url="http://localhost:8/c")))
    assert remote_hosts(local) == []
    check_network_allowed(local, denied)
    away = Config(upload=UploadConfig(mode="https",
                                      https=HttpsUploadConfig(url="https://collector.example/c")))
    assert remote_hosts(away) == [("upload.https.url", "collector.example")]
    check_network_allowed(away, {})  # no deny in force: nothing to refuse
    with pytest.raises(ConfigError, match="upload.https.url = 'collector.example'"):
        check_network_allowed(away, denied)


def test_the_drop_in_lowers_the_exposure(tmp_path):
    both = tmp_path / "edge-recorder.service"
    both.write_text(UNIT.read_text() + "\n" + (REPO / "systemd/no-network.conf").read_text())
    assert exposure(both) < exposure(UNIT)
