"""No quiet downgrades: plain MQTT to another machine, simulated pins or silent recording on a
device that uploads are refused in one line naming the key and its opt-out, accepted only
with that ``[security]`` opt-out, and every opt-out in force is listed by ``edge doctor``.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edge.cli import main as edge
from edge.compose.config import load_checked_config
from edge.config import load_config
from edge.config.rules import is_loopback
from edge.errors import ConfigError
from edge.service.doctor import Doctor, Status

LIGHT = '[hardware]\nprofile = "generic-usb"\nmute_pin = "none"\nbutton_pin = "none"\n'
"""An uploading device needs a recording light: an LED on GPIO27 (real pins by default)."""

PLAIN = {
    "mqtt": '[mqtt]\nenabled = true\nhost = "{host}"\nport = 1883\ntls = false\n',
    "upload.mqtt": '[upload]\nmode = "mqtt"\n[upload.mqtt]\nhost = "{host}"\nport = 1883\n'
                   'tls = false\n' + LIGHT,
}
OPT_OUT = {"mqtt": "allow_plaintext_mqtt", "upload.mqtt": "allow_plaintext_upload"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + text)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_checked_config(path)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("section", sorted(PLAIN))
def test_plain_mqtt_to_another_machine_is_refused_unless_the_owner_opts_out(tmp_path, section):
    text = PLAIN[section].format(host="broker.lan")
    message = refusal(write(tmp_path, text))
    assert f"{section}.tls = false" in message and "'broker.lan'" in message
    assert f"security.{OPT_OUT[section]} = true" in message and f"{section}.tls = true" in message
    cfg = load_checked_config(write(tmp_path, text + f"[security]\n{OPT_OUT[section]} = true\n"))
    assert getattr(cfg.security, OPT_OUT[section]) is True


@pytest.mark.parametrize("section", sorted(PLAIN))
def test_one_plaintext_opt_out_does_not_cover_the_other_link(tmp_path, section):
    other = OPT_OUT["mqtt" if section == "upload.mqtt" else "upload.mqtt"]
    text = PLAIN[section].format(host="10.0.0.5") + f"[security]\n{other} = true\n"
    assert OPT_OUT[section] in refusal(write(tmp_path, text))


HOSTS = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["localhost", "broker.lan", "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0",
                     "localhost.example", "::ffff:127.0.0.1", "LOCALHOST", "10.0.0.1"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){0,2}", fullmatch=True),
)


@given(host=HOSTS, section=st.sampled_from(sorted(PLAIN)), opted_out=st.booleans())
@example(host="127.0.0.1", section="mqtt", opted_out=False)
@example(host="192.168.1.2", section="upload.mqtt", opted_out=False)
def test_a_plain_link_loads_only_to_loopback_or_with_its_opt_out(tmp_path_factory, host,
                                                                  section, opted_out):
    text = PLAIN[section].format(host=host)
    if opted_out:
        text += f"[security]\n{OPT_OUT[section]} = true\n"
    path = write(tmp_path_factory.mktemp("cfg"), text)
    loopback = is_loopback(host)
    if loopback:  # the rule and the address family agree on what never leaves the machine
        assert host == "localhost" or ipaddress.ip_address(host).is_loopback
    try:
        load_config(path)
    except ConfigError as exc:
        assert not loopback and not opted_out, str(exc)
        assert f"security.{OPT_OUT[section]}" in str(exc)
    else:
        assert loopback or opted_out


def test_simulated_pins_on_a_device_that_uploads_are_refused_unless_the_owner_opts_out(tmp_path):
    upload = '[upload]\nmode = "https"\n[upload.https]\nurl = "https://collector.example/c"\n'
    text = upload + LIGHT + 'pin_factory = "mock"\n'
    message = refusal(write(tmp_path, text))
    assert "hardware.pin_factory = 'mock'" in message
    assert "security.allow_simulated_pins = true" in message
    load_checked_config(write(tmp_path, text + "[security]\nallow_simulated_pins = true\n"))
    # without uploads simulated pins are no downgrade (the demo, `make run`)
    load_checked_config(write(tmp_path, LIGHT + 'pin_factory = "mock"\n'))


def test_silent_recording_on_a_device_that_uploads_is_refused_unless_the_owner_opts_out(
        tmp_path):
    upload = '[upload]\nmode = "https"\n[upload.https]\nurl = "https://collector.example/c"\n'
    text = upload + LIGHT + "chime = false\n"
    message = refusal(write(tmp_path, text))
    assert "hardware.chime = false" in message
    assert "security.allow_silent_recording = true" in message
    load_checked_config(write(tmp_path, text + "[security]\nallow_silent_recording = true\n"))
    load_checked_config(write(tmp_path, LIGHT + "chime = false\n"))


def test_config_check_names_the_downgrade_in_one_line(tmp_path):
    path = write(tmp_path, PLAIN["mqtt"].format(host="broker.lan"))
    proc = subprocess.run([sys.executable, "-m", "edge", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "security.allow_plaintext_mqtt" in line


def test_doctor_lists_every_opt_out_in_force_as_a_warning(tmp_path, capsys):
    text = (PLAIN["mqtt"].format(host="broker.lan") + LIGHT + "chime = false\n"
            "[security]\nallow_plaintext_mqtt = true\nallow_silent_recording = true\n")
    cfg = load_checked_config(write(tmp_path, text))
    findings = [f for f in Doctor(cfg).run(["security"]) if f.check == "security"]
    assert {f.status for f in findings} == {Status.WARN}
    shown = sorted(f.detail.split(" = true")[0] for f in findings)
    assert shown == ["security.allow_plaintext_mqtt", "security.allow_silent_recording"]
    assert all("remove security." in f.fix for f in findings)
    # and through the command line, in its report
    assert edge(["doctor", "--config", str(write(tmp_path, text)), "--only", "security"]) == 0
    out = capsys.readouterr().out
    assert "WARN  security security.allow_plaintext_mqtt = true" in out


def test_doctor_says_when_no_downgrade_is_accepted(tmp_path):
    [f] = Doctor(load_checked_config(write(tmp_path, ""))).run(["security"])
    assert f.status is Status.OK and "no downgrade" in f.detail


def test_edge_run_on_a_file_needs_no_chime_opt_out(tmp_path, store):
    """``edge run --input FILE`` turns chimes off itself (nobody is at a microphone): an
    uploading config with chimes on still runs it, without the owner opting out."""
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "quiet.wav"
    sf.write(str(audio), np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    upload = '[upload]\nmode = "https"\n[upload.https]\nurl = "https://127.0.0.1:9/c"\n'
    path = write(tmp_path, upload + LIGHT + 'pin_factory = "mock"\n'
                                            "[security]\nallow_simulated_pins = true\n")
    assert edge(["run", "--config", str(path), "--input", str(audio)]) == 0
