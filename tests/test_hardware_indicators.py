"""The recording indicator: states and timings read from MockPin histories and SPI bits."""

from __future__ import annotations

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.config import Config, HardwareConfig, UploadConfig, replace
from edge.errors import ConfigError, HardwareError
from edge.hardware.indicators import Apa102, Look, MonoLed, PwmLed, RgbLed, apa102_frame
from edge.hardware.profiles import Pin, resolve
from edge.pipeline.events import HardwareFault, RecordingStarted, RecordingStopped, State
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import make_rig, states
from tests.waiting import wait_for

MUTE = 22
RGB_PINS = ["GPIO5", "GPIO6", "GPIO13"]


def wake_stream() -> np.ndarray:
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                         phrase("what is the weather like today"), synth.silence(2.5)])


def transitions(history: list[int]) -> list[int]:
    """Frame indices at which a pin's history grew, from per-frame history lengths."""
    return [i for i in range(1, len(history)) if history[i] != history[i - 1]]


def test_recording_light_is_on_from_detection_to_the_end_of_the_clip(tmp_path, pwm_factory,
                                                                     store):
    rig = make_rig(tmp_path, wake_stream(), pwm_factory,
                   hardware={"leds": "rgb", "led_pins": RGB_PINS})
    pwm_factory.pin(MUTE).drive_low()
    red, green, blue = (pwm_factory.pin(p) for p in RGB_PINS)
    lengths: list[int] = []
    rig.frame_hooks.append(lambda i: lengths.append(len(red.states)))
    rig.run()
    # White while recording, dark otherwise; each history checked whole, length first.
    for pin in (red, green, blue):
        states(pin, [0, 0.5, 0])
    [started] = rig.of(RecordingStarted)
    [stopped] = rig.of(RecordingStopped)
    on_frame, off_frame = transitions([1, *lengths])
    # On at the frame that detected; off at the frame that ended the clip: not one frame late.
    assert on_frame * FRAME_S == pytest.approx(started.t)
    assert off_frame * FRAME_S == pytest.approx(stopped.t)
    assert rig.plugin.looks == [Look.LISTENING, Look.RECORDING, Look.LISTENING, Look.OFF]


def test_muted_is_red_and_listening_can_be_dim(tmp_path, pwm_factory, store):
    rig = make_rig(tmp_path, synth.silence(1.0), pwm_factory, endless=True, pace_s=0.002,
                   hardware={"leds": "rgb", "led_pins": RGB_PINS, "led_dim": 0.1,
                             "led_brightness": 0.8})
    red, green, blue = (pwm_factory.pin(p) for p in RGB_PINS)
    t = rig.start()
    try:
        wait_for(lambda: rig.plugin.looks[-1:] == [Look.MUTED])  # booted on mute
        pwm_factory.pin(MUTE).drive_low()
        wait_for(lambda: rig.plugin.looks[-1:] == [Look.LISTENING])
        pwm_factory.pin(MUTE).drive_high()
        wait_for(lambda: rig.plugin.looks[-1:] == [Look.MUTED])
    finally:
        rig.stop(t)
    states(red, [0, 0.8, 0, 0.8, 0])
    states(green, [0])
    states(blue, [0, 0.1, 0])


def test_each_backend_shows_four_distinct_looks(pwm_factory):
    one = MonoLed(Pin(5, "hardware.led_pins[0]", "GPIO5"), True, pwm_factory)
    dim = PwmLed(Pin(6, "hardware.led_pins[0]", "GPIO6"), True, 0.9, 0.2, pwm_factory)
    for led in (one, dim):
        for look in (Look.LISTENING, Look.RECORDING, Look.LISTENING):
            led.show(look)
    states(pwm_factory.pin(5), [0, 1, 0])
    states(pwm_factory.pin(6), [0, 0.2, 0.9, 0.2])
    for led in (one, dim):
        led.show(Look.MUTED)  # a short flash every 2 s: it starts with the flash
    wait_for(lambda: len(pwm_factory.pin(5).states) >= 4 and len(pwm_factory.pin(6).states) >= 5)
    assert pwm_factory.pin(5).states[3].state == 1
    assert pwm_factory.pin(6).states[4].state == 1
    for led in (one, dim):
        led.close()
    assert pwm_factory.pin(5).states[-1].state == 0


class Apa102Listener:
    """The slave side of the LEDs' SPI bus: decodes every frame written to GPIO10/11."""

    def __init__(self, factory) -> None:  # type: ignore[no-untyped-def]
        from gpiozero.pins.mock import MockSPIDevice

        outer = self
        self.frames: list[list[tuple[int, int, int, int]]] = []

        class Device(MockSPIDevice):
            def on_select(self) -> None:  # type: ignore[override]
                if self.select_pin.state == self.select_high:
                    self.on_start()
                elif self.rx_buf:
                    outer.frames.append(decode(self.rx_buf))

        self.device = Device(11, 10, None, 8, pin_factory=factory)


def decode(bits: list[int]) -> list[tuple[int, int, int, int]]:
    """APA102 bits -> (brightness, red, green, blue) per LED, checking the framing."""
    data = [int("".join(str(int(b)) for b in bits[i:i + 8]), 2) for i in range(0, len(bits), 8)]
    assert data[:4] == [0, 0, 0, 0], "every frame starts with 32 zero bits"
    leds = []
    i = 4
    while i + 4 <= len(data) and data[i] >> 5 == 0b111:
        leds.append((data[i] & 0x1F, data[i + 3], data[i + 2], data[i + 1]))
        i += 4
    assert all(b == 0 for b in data[i:]), "the end frame is zeros"
    return leds


def test_apa102_pixels_on_the_respeaker_2mic(tmp_path, factory, store):
    listener = Apa102Listener(factory)
    rig = make_rig(tmp_path, wake_stream(), factory,
                   hardware={"profile": "respeaker-2mic-v2", "mute_pin": "GPIO22",
                             "led_spi": "software"})
    factory.pin(MUTE).drive_low()
    rig.run()
    power = factory.pin(12)
    states(power, [False, True])  # GPIO12 is active low: low powers the pixels; high at exit
    white, dark = (31, 128, 128, 128), (31, 0, 0, 0)
    assert listener.frames == [[dark] * 3, [white] * 3, [dark] * 3, [dark] * 3]
    assert rig.plugin.looks == [Look.LISTENING, Look.RECORDING, Look.LISTENING, Look.OFF]
    assert rig.daemon.recorder.stats.clips == 1


def test_apa102_twelve_pixels_muted_red_on_the_4mic(factory):
    listener = Apa102Listener(factory)
    leds = Apa102(12, "software", Pin(5, "hardware.led_power_pin", "GPIO5"), True, 1.0, 0.0,
                  factory)
    leds.show(Look.MUTED)
    leds.show(Look.ERROR)
    leds.close()
    assert listener.frames == [[(31, 255, 0, 0)] * 12, [(31, 255, 115, 0)] * 12,
                               [(31, 0, 0, 0)] * 12]
    states(factory.pin(5), [False, True, False])  # GPIO5 active high: on, then off at close


def test_apa102_frame_layout():
    frame = apa102_frame([(1.0, 0.0, 0.0)] * 17)
    assert frame[:4] == [0, 0, 0, 0]
    assert frame[4:8] == [0xFF, 0, 0, 255]  # brightness word, then blue, green, red
    assert len(frame) == 4 + 17 * 4 + 2  # one end byte per 16 LEDs, rounded up


@pytest.fixture
def spi_disabled(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A machine whose kernel has no SPI device node (dtparam=spi=on never set)."""
    monkeypatch.setattr("edge.hardware.indicators.SPIDEV", str(tmp_path / "spidev0.0"))


def test_spi_unavailable_is_a_clear_error_naming_the_key(factory, spi_disabled):
    with pytest.raises(HardwareError, match=r"^hardware.led_spi = 'hardware': SPI is "
                                            r"unavailable \(there is no .*spidev0.0\).*"
                                            r"dtparam=spi=on"):
        Apa102(3, "hardware", None, True, 0.5, 0.0, factory)
    # Bit-banging the same pins needs no spidev.
    Apa102(3, "software", None, True, 0.5, 0.0, factory).close()


def test_spi_unavailable_leaves_the_device_muted(tmp_path, factory, spi_disabled, store):
    rig = make_rig(tmp_path, synth.silence(2.0), factory,
                   hardware={"profile": "respeaker-2mic-v2", "mute_pin": "none"})
    rig.run_until(lambda: bool(rig.of(HardwareFault)) and
                  rig.daemon.recorder.state is State.MUTED)
    [fault] = rig.of(HardwareFault)
    assert fault.key == "hardware.led_spi"
    assert rig.source.starts == 0 and rig.source.reads == 0
    states(factory.pin(12), [False, True])  # active low: the pixels' power was not left on


def test_the_indicator_cannot_be_off_while_uploading():
    from edge.compose.config import check_config

    upload = UploadConfig(mode="https", https=replace(UploadConfig().https,
                                                      url="https://example.org/clips"))
    cfg = replace(Config(), upload=upload, hardware=HardwareConfig(profile="no-gpio"))
    with pytest.raises(ConfigError, match=r"hardware.leds = 'none' is not allowed while "
                                          r"upload.mode = 'https'"):
        check_config(cfg)
    cfg = replace(cfg, hardware=HardwareConfig(profile="generic-usb", leds="none"))
    with pytest.raises(ConfigError, match=r"hardware.leds = 'none'"):
        check_config(cfg)
    check_config(replace(cfg, hardware=HardwareConfig(profile="generic-usb")))  # accepted


def test_rgb_error_look_blinks_amber(pwm_factory):
    led = RgbLed(tuple(Pin(n, f"hardware.led_pins[{i}]", f"GPIO{n}")
                       for i, n in enumerate((5, 6, 13))), True, 1.0, 0.0, pwm_factory)
    led.show(Look.ERROR)
    red, green = pwm_factory.pin(5), pwm_factory.pin(6)
    wait_for(lambda: len(red.states) >= 3 and len(green.states) >= 3)
    assert [s.state for s in red.states[:3]] == [0, 1, 0]
    assert [s.state for s in green.states[:3]] == pytest.approx([0, 0.45, 0])
    led.close()


def test_led_pin_in_use_names_the_key(pwm_factory):
    from gpiozero import DigitalOutputDevice

    held = DigitalOutputDevice(6, pin_factory=pwm_factory)
    spec = resolve(HardwareConfig(profile="generic-usb", leds="rgb", led_pins=RGB_PINS))
    from edge.hardware.indicators import build_indicator

    with pytest.raises(HardwareError, match=r"^hardware.led_pins\[1\] = 'GPIO6': the pin is "
                                            r"already in use"):
        build_indicator(spec, pwm_factory)
    held.close()
