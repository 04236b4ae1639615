"""``edge doctor``'s assist check: plaintext accepted, the key's permissions, the port."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from edge.assist.keys import key_path, load_or_create_key
from edge.config import AssistConfig, AudioConfig, Config, replace
from edge.service.doctor import Doctor, Status
from tests.fixtures.mqtt import free_port


def assist_cfg(tmp_path: Path, **assist: Any) -> Config:
    return replace(Config(), state_dir=str(tmp_path / "state"),
                   assist=AssistConfig(**{"mode": "esphome", "host": "127.0.0.1",
                                          "port": free_port(), **assist}))


def assist_findings(cfg: Config, running: bool | None = None) -> list[tuple[Status, str]]:
    doctor = Doctor(cfg, ntp=lambda: True, service=lambda: running)
    return [(f.status, f.detail) for f in doctor.run(["assist"])]


def test_assist_off_is_ok_and_binds_nothing(tmp_path):
    cfg = replace(Config(), state_dir=str(tmp_path / "state"))
    assert assist_findings(cfg) == [
        (Status.OK, "assist.mode = 'off': no voice assistant, no listening socket")]


def test_a_private_key_and_a_free_port_pass(tmp_path):
    cfg = replace(assist_cfg(tmp_path), audio=AudioConfig(output="none"))
    load_or_create_key(key_path(cfg))
    found = assist_findings(cfg)
    assert [s for s, _ in found] == [Status.OK, Status.OK, Status.OK]
    assert "is private (mode 600" in found[0][1]
    assert found[1][1] == "audio.output = 'none': the assistant's answers are not played"
    assert f"can listen on 127.0.0.1:{cfg.assist.port}" in found[2][1]


ASOUNDRC = """pcm.speaker {{ type file; slave.pcm {{ type null }}; file "{played}"; format "raw" }}
pcm.default {{ type file; slave.pcm {{ type null }}; file "/dev/null"; infile "{missing}" }}
"""
NO_CARD = """pcm.default { type hw; card 99 }
ctl.default { type hw; card 99 }
"""


def output_findings(cfg: Config) -> list[tuple[Status, str]]:
    return [(s, d) for s, d in assist_findings(cfg)
            if d.startswith(("audio.output", "hardware.chime_device", "the answers play"))]


def with_speaker(tmp_path: Path, monkeypatch: Any) -> Config:
    """An assist config with its key, on a machine whose one output is ALSA's 'speaker'."""
    conf = tmp_path / "asoundrc"
    conf.write_text(ASOUNDRC.format(played=tmp_path / "played.raw",
                                    missing=tmp_path / "none.raw"))
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    cfg = assist_cfg(tmp_path)
    load_or_create_key(key_path(cfg))
    return cfg


def test_the_answers_output_is_checked_on_the_devices_this_machine_has(tmp_path, monkeypatch):
    """ALSA's file plugin stands in for a speaker: a named output must be one of them."""
    cfg = with_speaker(tmp_path, monkeypatch)
    ((status, detail),) = output_findings(replace(cfg, audio=AudioConfig(output="speaker")))
    assert status is Status.OK and detail.startswith("the answers play on audio.output = ")
    ((status, detail),) = output_findings(replace(cfg, audio=AudioConfig(output="usb dac")))
    assert status is Status.FAIL
    assert detail.startswith("audio.output = 'usb dac': no such output device (outputs: ")


def test_no_output_at_all_warns_for_the_default_and_fails_for_a_named_one(tmp_path, monkeypatch):
    conf = tmp_path / "asoundrc"
    conf.write_text(NO_CARD)  # the default is a sound card this machine does not have
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    from edge.audio.portaudio import has_output_device

    assert not has_output_device()
    cfg = assist_cfg(tmp_path)
    ((status, detail),) = output_findings(cfg)
    assert status is Status.WARN and "this machine has no audio output" in detail
    ((status, _),) = output_findings(replace(cfg, audio=AudioConfig(output="speaker")))
    assert status is Status.FAIL


def test_without_audio_output_the_answers_play_on_the_chimes_device(tmp_path, monkeypatch):
    """One speaker for both: '' takes the chimes' output (the profile's or chime_device)."""
    from edge.assist.answer import answer_device
    from edge.config import HardwareConfig

    cfg = with_speaker(tmp_path, monkeypatch)
    chimes = replace(cfg, hardware=HardwareConfig(chime_device="speaker"))
    assert answer_device(chimes) == ("speaker", "hardware.chime_device")
    assert output_findings(chimes) == [
        (Status.OK, "the answers play on hardware.chime_device = 'speaker'")]
    hat = replace(cfg, hardware=HardwareConfig(profile="respeaker-2mic-v2", pin_factory="mock",
                                                 mute_pin="none"))
    assert answer_device(hat) == ("seeed2micvoicec", "hardware.chime_device")
    ((status, detail),) = output_findings(hat)
    assert status is Status.FAIL and detail.startswith(
        "hardware.chime_device = 'seeed2micvoicec': no such output device")
    own = replace(chimes, audio=AudioConfig(output="default"))
    assert answer_device(own) == ("default", "audio.output")


def test_plaintext_allowed_is_a_warning(tmp_path):
    cfg = assist_cfg(tmp_path, allow_unencrypted=True)
    load_or_create_key(key_path(cfg))
    found = assist_findings(cfg)
    assert found[0][0] is Status.WARN
    assert found[0][1].startswith("assist.allow_unencrypted = true")


def test_a_missing_key_warns_how_to_make_it(tmp_path):
    cfg = assist_cfg(tmp_path)
    (f,) = [f for f in Doctor(cfg, service=lambda: None).run(["assist"])
            if "key" in f.detail]
    assert f.status is Status.WARN
    assert "edge assist key" in f.fix


def test_a_key_readable_by_others_fails_with_chmod(tmp_path):
    cfg = assist_cfg(tmp_path)
    path = key_path(cfg)
    load_or_create_key(path)
    os.chmod(path, 0o644)
    (f,) = [f for f in Doctor(cfg, service=lambda: None).run(["assist"])
            if f.status is Status.FAIL]
    assert "readable by others (mode 644)" in f.detail
    assert f"chmod 600 {path}" in f.fix


def test_a_port_in_use_fails_unless_the_running_service_holds_it(tmp_path):
    cfg = assist_cfg(tmp_path)
    load_or_create_key(key_path(cfg))
    with socket.socket() as held:
        held.bind(("127.0.0.1", cfg.assist.port))
        held.listen(1)
        stopped = assist_findings(cfg, running=False)
        running = assist_findings(cfg, running=True)
    assert stopped[-1][0] is Status.FAIL
    assert f"assist.port = {cfg.assist.port}" in stopped[-1][1]
    assert "another program listens there" in stopped[-1][1]
    assert running[-1] == (Status.OK, f"port 127.0.0.1:{cfg.assist.port} is in use: the "
                                      "running service listens there")


def test_an_address_not_of_this_machine_fails(tmp_path):
    cfg = assist_cfg(tmp_path, host="192.0.2.1")  # TEST-NET-1: no interface has it
    load_or_create_key(key_path(cfg))
    assert assist_findings(cfg)[-1][0] is Status.FAIL
    assert "not an address of this machine" in assist_findings(cfg)[-1][1]
