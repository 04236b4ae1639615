"""The [hardware] config, its profiles, and `edge hardware`: bad input is named in one line."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from edge.compose.config import load_checked_config
from edge.config import Config, HardwareConfig, replace
from edge.errors import ConfigError
from edge.hardware.pins import gpio_number
from edge.hardware.profiles import PROFILES, apply_audio, resolve

EDGE = [sys.executable, "-m", "edge"]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_profiles_are_the_configs_choices():
    import dataclasses

    [f] = [f for f in dataclasses.fields(HardwareConfig) if f.name == "profile"]
    assert set(f.metadata["choices"]) == set(PROFILES)


def test_the_default_says_there_is_no_switch():
    spec = resolve(Config().hardware)
    assert spec.profile.name == "no-gpio" and spec.mute is None and spec.leds == "none"
    assert spec.pins() == []


@pytest.mark.parametrize("name", ["respeaker-2mic-v1", "respeaker-2mic-v2", "respeaker-4mic"])
def test_a_hat_needs_its_added_switch_or_an_explicit_none(name):
    with pytest.raises(ConfigError, match=rf"hardware.mute_pin is not set, and the {name} has "
                                          r"no mute switch of its own.*'none'"):
        resolve(HardwareConfig(profile=name))
    assert resolve(HardwareConfig(profile=name, mute_pin="none")).mute is None
    assert resolve(HardwareConfig(profile=name, mute_pin="GPIO22")).mute.gpio == 22


def test_profiles_set_pins_and_the_capture_device():
    usb = resolve(HardwareConfig(profile="generic-usb"))
    assert (usb.mute.gpio, usb.led_pins[0].gpio, usb.button.gpio) == (22, 27, 17)
    hat = resolve(HardwareConfig(profile="respeaker-2mic-v2", mute_pin="GPIO22"))
    assert hat.leds == "apa102" and hat.led_count == 3 and hat.button.gpio == 17
    assert hat.led_power.gpio == 12 and not hat.led_power_active_high
    four = resolve(HardwareConfig(profile="respeaker-4mic", mute_pin="none"))
    assert four.led_count == 12 and four.led_power.gpio == 5 and four.led_power_active_high
    assert four.button is None
    cfg = apply_audio(replace(Config(), hardware=HardwareConfig(profile="respeaker-usb-4mic")))
    assert (cfg.audio.input, cfg.audio.channel, cfg.audio.rate) == \
        ("ReSpeaker 4 Mic Array", 0, 16000)
    mine = replace(Config(), audio=replace(Config().audio, input="hw:2", channel=1),
                   hardware=HardwareConfig(profile="respeaker-4mic", mute_pin="none"))
    assert (apply_audio(mine).audio.input, apply_audio(mine).audio.channel) == ("hw:2", 1)


def test_pin_names():
    assert [gpio_number(t, "k") for t in ("GPIO17", "bcm17", "17", "BOARD11", "J8:11")] == \
        [17] * 5


@pytest.mark.parametrize("text, match", [
    ('mute_pin = "GPIO99"', r"hardware.mute_pin = 'GPIO99' is not a valid pin: the 40-pin "
                            r"header has GPIO0 to GPIO27"),
    ('mute_pin = "BOARD6"', r"hardware.mute_pin = 'BOARD6' is not a valid pin: header pin 6 is "
                            r"ground"),
    ('button_pin = "P17"', r"hardware.button_pin = 'P17' is not a pin name; expected a header "
                           r"GPIO such as 'GPIO22'"),
    ('button_pin = "GPIO22"', r"hardware.button_pin = 'GPIO22' is already used by "
                              r"hardware.mute_pin = 'GPIO22'"),
    ('leds = "rgb"', r"hardware.led_pins = \[\] does not fit hardware.leds = 'rgb': it takes 3 "
                     r"pins \(red, green, blue\)"),
    ('led_pins = ["GPIO27", "GPIO5"]', r"it takes 1 pin"),
    ('chime_backend = "buzzer"', r"hardware.chime_pin is not set, and hardware.chime_backend = "
                                 r"'buzzer' needs it"),
    ('mute_pull = "floating"\nmute_active_state = "auto"', r"mute_active_state = 'auto' needs "
                                                          r"a pull resistor"),
    ('pin_factory = "pigpio"', r"hardware.pin_factory = 'pigpio' is not allowed"),
    ('profile = "respeaker-6mic"', r"hardware.profile = 'respeaker-6mic' is not allowed"),
])
def test_bad_hardware_config_names_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_checked_config(write(tmp_path, f'[hardware]\nprofile = "generic-usb"\n{text}\n'
                          if "profile" not in text else f"[hardware]\n{text}\n"))


@pytest.mark.parametrize("text, match", [
    ('mute_pin = "GPIO18"', r"hardware.mute_pin = 'GPIO18' is already in use: on the "
                            r"respeaker-2mic-v2, GPIO18 \(pin 12\) is wired to I2S BCLK"),
    ('mute_pin = "GPIO17"\nbutton_pin = "none"', r"GPIO17 \(pin 11\) is wired to the HAT's "
                                                 r"button"),
    ('mute_pin = "GPIO10"', r"wired to SPI MOSI \(APA102 LEDs\)"),
    ('mute_pin = "GPIO8"', r"wired to SPI CE0"),
])
def test_a_pin_the_board_uses_is_refused(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_checked_config(write(tmp_path, f'[hardware]\nprofile = "respeaker-2mic-v2"\n{text}\n'))


def test_every_hardware_key_is_documented():
    hints = typing.get_type_hints(HardwareConfig)
    import dataclasses

    for f in dataclasses.fields(HardwareConfig):
        assert f.metadata.get("doc"), f"hardware.{f.name} has no doc"
        assert f.name in hints


def run_edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=120)


def test_hardware_check_reads_the_switch(tmp_path):
    cfg = write(tmp_path, '[hardware]\nprofile = "generic-usb"\npin_factory = "mock"\n'
                          'chime = false\n')
    out = run_edge("hardware", "check", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "mute switch: GPIO22 (pin 15), in the MUTE position" in out.stdout
    assert out.stdout.rstrip().endswith("hardware: ok")


def test_hardware_check_names_what_is_wrong_without_a_traceback(tmp_path):
    cfg = write(tmp_path, '[hardware]\nprofile = "generic-usb"\npin_factory = "lgpio"\n'
                          'chime = false\n')
    out = run_edge("hardware", "check", "--config", str(cfg))
    assert out.returncode == 2
    assert "edge: error: hardware.pin_factory = 'lgpio': no GPIO library could open the GPIO " \
           "chip" in out.stderr
    assert "Traceback" not in out.stderr
    cfg = write(tmp_path, '[hardware]\nprofile = "respeaker-2mic-v1"\n')
    out = run_edge("hardware", "check", "--config", str(cfg))
    assert out.returncode == 2 and "hardware.mute_pin is not set" in out.stderr


def test_hardware_profiles_lists_every_board():
    out = run_edge("hardware", "profiles")
    assert out.returncode == 0
    for name in PROFILES:
        assert f"{name}: " in out.stdout
    assert "power GPIO12 (pin 32) active low" in out.stdout


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(set(PROFILES) - {"no-gpio"}))
def test_each_profile_has_its_documented_config(name):
    folder = REPO / "hardware" / name
    assert (folder / "README.md").is_file()
    cfg = load_checked_config(folder / "edge.toml")
    assert cfg.hardware.profile == name
    spec = resolve(cfg.hardware)
    readme = (folder / "README.md").read_text()
    for pin in spec.pins():
        assert f"GPIO{pin.gpio}" in readme, f"{pin.key} = GPIO{pin.gpio} is not in the wiring"
