"""The recording indicator: what the LEDs show in each state.

Four distinct looks, on every backend, and two more where colours can tell them apart:

=========  ==========  ====================  ==========================
look       one LED     PWM LED               RGB LED / APA102 pixels
=========  ==========  ====================  ==========================
listening  off         off, or ``led_dim``   off, or dim blue
recording  on          ``led_brightness``    white
muted      short blink short blink           red
error      fast blink  fast blink            amber (blinking on RGB)
thinking   as listening as listening         cyan
replying   as listening as listening         green
=========  ==========  ====================  ==========================

Thinking (the voice assistant has the utterance, its answer has not come) and replying
(its answer plays) follow a streamed turn; a single LED keeps its one meaning, the
recording light, and shows them as listening.

The indicator is driven from the audio thread at the frame a state begins, so the
recording look is on from the detection to the end of the clip. APA102 pixels (the
ReSpeaker HATs) are written over SPI with gpiozero's SPI interface: hardware SPI
when the kernel's spidev is there, and a clear error naming ``hardware.led_spi``
when it is not (set ``led_spi = "software"`` to bit-bang the same pins instead, as
the simulated pins of the mock factory need).
"""

from __future__ import annotations

import logging
import os
import warnings
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from edge.errors import HardwareError
from edge.hardware.pins import hardware_error
from edge.hardware.profiles import HardwareSpec, Pin

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)


class Look(Enum):
    OFF = "off"
    LISTENING = "listening"
    RECORDING = "recording"
    MUTED = "muted"
    ERROR = "error"
    THINKING = "thinking"
    REPLYING = "replying"


RGB = tuple[float, float, float]
COLOURS: dict[Look, RGB] = {
    Look.OFF: (0.0, 0.0, 0.0),
    Look.LISTENING: (0.0, 0.0, 1.0),
    Look.RECORDING: (1.0, 1.0, 1.0),
    Look.MUTED: (1.0, 0.0, 0.0),
    Look.ERROR: (1.0, 0.45, 0.0),
    Look.THINKING: (0.0, 0.8, 0.8),
    Look.REPLYING: (0.0, 1.0, 0.0),
}
MUTED_BLINK = (0.1, 1.9)
"""On and off seconds of a single-colour LED while muted: a short flash every 2 s."""
ERROR_BLINK = (0.2, 0.2)


class Indicator(Protocol):
    def show(self, look: Look) -> None: ...

    def close(self) -> None:
        """Turn the lights off and release the pins."""
        ...


class NoIndicator:
    def show(self, look: Look) -> None:
        pass

    def close(self) -> None:
        pass


class MonoLed:
    """One LED on a pin: on while recording, blinking while muted or in error."""

    def __init__(self, pin: Pin, active_high: bool, factory: Factory | None) -> None:
        from gpiozero import LED

        self.led = LED(f"GPIO{pin.gpio}", active_high=active_high, initial_value=False,
                       pin_factory=factory)

    def show(self, look: Look) -> None:
        if look is Look.MUTED:
            self.led.blink(*MUTED_BLINK)
        elif look is Look.ERROR:
            self.led.blink(*ERROR_BLINK)
        else:
            self._steady(look)

    def _steady(self, look: Look) -> None:
        if look is Look.RECORDING:
            self.led.on()
        else:
            self.led.off()

    def close(self) -> None:
        self.led.off()
        self.led.close()


class PwmLed(MonoLed):
    """One dimmable LED: dim (or off) while listening, bright while recording."""

    def __init__(self, pin: Pin, active_high: bool, brightness: float, dim: float,
                 factory: Factory | None) -> None:
        from gpiozero import PWMLED

        self.brightness = brightness
        self.dim = dim
        self.led = PWMLED(f"GPIO{pin.gpio}", active_high=active_high, initial_value=0.0,
                          pin_factory=factory)

    def _steady(self, look: Look) -> None:
        if look is Look.RECORDING:
            self.led.value = self.brightness
        elif look in (Look.LISTENING, Look.THINKING, Look.REPLYING):
            self.led.value = self.dim
        else:
            self.led.off()


def colour(look: Look, brightness: float, dim: float) -> RGB:
    r, g, b = COLOURS[look]
    level = dim if look is Look.LISTENING else brightness
    return (r * level, g * level, b * level)


class RgbLed:
    """A common-anode or common-cathode RGB LED on three PWM pins."""

    def __init__(self, pins: tuple[Pin, ...], active_high: bool, brightness: float, dim: float,
                 factory: Factory | None) -> None:
        from gpiozero import RGBLED

        self.brightness = brightness
        self.dim = dim
        red, green, blue = (f"GPIO{p.gpio}" for p in pins)
        self.led = RGBLED(red, green, blue, active_high=active_high, initial_value=(0, 0, 0),
                          pwm=True, pin_factory=factory)

    def show(self, look: Look) -> None:
        if look is Look.ERROR:
            self.led.blink(*ERROR_BLINK, on_color=colour(look, self.brightness, self.dim))
        else:
            self.led.color = colour(look, self.brightness, self.dim)

    def close(self) -> None:
        self.led.off()
        self.led.close()


def apa102_frame(pixels: list[RGB]) -> list[int]:
    """The SPI bytes that set a chain of APA102 LEDs: start frame, one word per LED, end frame.

    Each LED word is 0b111 + 5-bit brightness, then blue, green, red. The brightness
    field is kept at full and the level put in the 8-bit colours, which dims smoothly.
    """
    out = [0x00] * 4
    for r, g, b in pixels:
        out += [0xFF, _byte(b), _byte(g), _byte(r)]
    # One extra clock edge per two LEDs pushes the data to the end of the chain.
    out += [0x00] * max(1, (len(pixels) + 15) // 16)
    return out


def _byte(level: float) -> int:
    return max(0, min(255, round(level * 255)))


class Apa102:
    """The APA102 pixels of the ReSpeaker HATs, on SPI0 (MOSI GPIO10, SCLK GPIO11)."""

    def __init__(self, count: int, spi: str, power: Pin | None, power_active_high: bool,
                 brightness: float, dim: float, factory: Factory | None) -> None:
        from gpiozero import DigitalOutputDevice

        self.count = count
        self.brightness = brightness
        self.dim = dim
        self.power: Any = None
        self.spi: Any = None
        if power is not None:
            try:
                self.power = DigitalOutputDevice(f"GPIO{power.gpio}",
                                                 active_high=power_active_high,
                                                 initial_value=True, pin_factory=factory)
            except Exception as exc:
                raise hardware_error(power.key, power.text, exc) from None
        try:
            self.spi = open_spi(spi, factory)
        except Exception:
            self._close_power()
            raise
        self.frames_sent = 0

    def show(self, look: Look) -> None:
        self.write([colour(look, self.brightness, self.dim)] * self.count)

    def write(self, pixels: list[RGB]) -> None:
        self.spi.write(apa102_frame(pixels))
        self.frames_sent += 1

    def close(self) -> None:
        if self.spi is not None:
            try:
                self.write([(0.0, 0.0, 0.0)] * self.count)
            finally:
                self.spi.close()
                self.spi = None
        self._close_power()

    def _close_power(self) -> None:
        if self.power is not None:
            self.power.off()
            self.power.close()
            self.power = None


SPIDEV = "/dev/spidev0.0"


def open_spi(mode: str, factory: Factory | None, device: str | None = None) -> Any:
    """SPI0 for the LEDs: the kernel's spidev (``hardware``) or bit-banged (``software``)."""
    key = "hardware.led_spi"
    if mode == "software":
        try:
            return BitBangSpi(factory)
        except Exception as exc:
            raise hardware_error(key, mode, exc) from None
    unavailable = (f"{key} = 'hardware': SPI is unavailable ({{}}); enable it with `sudo "
                   "raspi-config nonint do_spi 0` (or dtparam=spi=on in "
                   "/boot/firmware/config.txt) and reboot, or set hardware.led_spi = 'software'")
    device = device or SPIDEV
    if not os.path.exists(device):
        raise HardwareError(unavailable.format(f"there is no {device}"))
    from gpiozero import SPISoftwareFallback

    with warnings.catch_warnings():
        # gpiozero quietly bit-bangs when hardware SPI fails; here that is an error to report.
        warnings.simplefilter("error", SPISoftwareFallback)
        try:
            assert factory is not None, "the kernel's SPI is reached through a pin factory"
            return factory.spi(clock_pin=11, mosi_pin=10, miso_pin=None, select_pin=8)
        except SPISoftwareFallback as exc:
            raise HardwareError(unavailable.format(_detail(exc))) from None
        except Exception as exc:
            raise hardware_error(key, mode, exc) from None


class BitBangSpi:
    """SPI mode 0, MSB first, on the SPI0 pins (SCLK GPIO11, MOSI GPIO10, CE0 GPIO8).

    Our own, because gpiozero's software SPI builds its bus on the process-wide default
    pin factory rather than the one it is given.
    """

    def __init__(self, factory: Factory | None) -> None:
        from gpiozero import DigitalOutputDevice

        self._devices: list[Any] = []
        try:
            for pin, active_high in ((8, False), (11, True), (10, True)):
                self._devices.append(DigitalOutputDevice(pin, active_high=active_high,
                                                         initial_value=False,
                                                         pin_factory=factory))
        except Exception:
            self.close()
            raise
        self.select, self.clock, self.mosi = self._devices

    def write(self, data: list[int]) -> int:
        self.select.on()
        try:
            for byte in data:
                for bit in range(7, -1, -1):
                    self.mosi.value = (byte >> bit) & 1
                    self.clock.on()
                    self.clock.off()
        finally:
            self.select.off()
        return len(data)

    def close(self) -> None:
        for d in reversed(self._devices):
            d.close()
        self._devices = []


def _detail(exc: BaseException) -> str:
    text = str(exc)
    return text.split("error was: ", 1)[-1].rstrip(")") if "error was" in text else text


def build_indicator(spec: HardwareSpec, factory: Factory | None) -> Indicator:
    """The configured indicator; a HardwareError names the config key when a part fails."""
    if spec.leds == "none":
        return NoIndicator()
    if spec.leds == "apa102":
        return Apa102(spec.led_count, spec.led_spi, spec.led_power, spec.led_power_active_high,
                      spec.led_brightness, spec.led_dim, factory)
    first = spec.led_pins[0]
    try:
        if spec.leds == "gpio":
            return MonoLed(first, spec.led_active_high, factory)
        if spec.leds == "pwm":
            return PwmLed(first, spec.led_active_high, spec.led_brightness, spec.led_dim, factory)
        return RgbLed(spec.led_pins, spec.led_active_high, spec.led_brightness, spec.led_dim,
                      factory)
    except Exception as exc:
        raise _blame(spec.led_pins, exc) from None


def _blame(pins: tuple[Pin, ...], exc: Exception) -> HardwareError:
    """Name the pin the error is about when it says; else the first."""
    text = str(exc)
    for p in pins:
        if f"GPIO{p.gpio}" in text:
            return hardware_error(p.key, p.text, exc)
    return hardware_error(pins[0].key, pins[0].text, exc)
