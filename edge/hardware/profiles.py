"""Hardware profiles, and resolving the ``[hardware]`` config against one.

A profile names a board and sets its capture device, channel and pins. Any key
left at ``""`` in the config takes the profile's value; ``"none"`` says the part
is not fitted. A board with no mute switch of its own (the ReSpeaker HATs) makes
the config say which pin the added switch is on, or ``mute_pin = "none"``: a
device without a switch is never so by accident.

The wiring, driver set-up and parts list of each profile are in ``hardware/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.audio.frames import SAMPLE_RATE
from edge.config import Config, HardwareConfig, SecurityConfig, replace
from edge.errors import ConfigError
from edge.hardware.pins import NONE, gpio_number, pin_label

_HAT_BUS = {2: "I2C SDA (codec control)", 3: "I2C SCL (codec control)",
            18: "I2S BCLK", 19: "I2S LRCLK", 20: "I2S DIN (microphones)", 21: "I2S DOUT",
            10: "SPI MOSI (APA102 LEDs)", 11: "SPI SCLK (APA102 LEDs)"}


@dataclass(frozen=True)
class Profile:
    """A named hardware setup (a HAT, a USB array, a plain computer): its capture device and
    channel, LEDs, button, mute switch and chimes."""

    name: str
    summary: str
    input: str
    """Capture device: a substring of its PortAudio name; '' is the system default."""
    device_channels: int
    """Channels the capture device delivers."""
    channel: int
    """Channel kept (0-based); -1 averages them."""
    rate: int
    """Capture rate in Hz; 0 takes the device's default."""
    mute_pin: str | None
    """None: the board has no switch of its own, so the config must name one or 'none'."""
    leds: str = NONE
    led_pins: tuple[str, ...] = ()
    led_count: int = 0
    led_power_pin: str = NONE
    led_power_active_high: bool = True
    button_pin: str = NONE
    chime_backend: str = "pyaudio"
    chime_device: str = ""
    busy: Mapping[int, str] = field(default_factory=dict)
    """GPIOs the board itself uses, and what for: no part may be put on them."""


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("no-gpio", "a computer without GPIO (development, the demo): no switch, LEDs or "
            "button", input="", device_channels=0, channel=-1, rate=0, mute_pin=NONE),
    Profile("respeaker-2mic-v1", "Seeed ReSpeaker 2-Mics Pi HAT v1.x (WM8960 codec)",
            input="wm8960", device_channels=2, channel=0, rate=SAMPLE_RATE, mute_pin=None,
            leds="apa102", led_count=3, led_power_pin="GPIO12", led_power_active_high=False,
            button_pin="GPIO17", chime_device="wm8960",
            busy={**_HAT_BUS, 12: "LED power (active low)", 17: "the HAT's button"}),
    Profile("respeaker-2mic-v2", "Seeed ReSpeaker 2-Mics Pi HAT v2.0 (TLV320AIC3104 codec)",
            input="seeed2micvoicec", device_channels=2, channel=0, rate=SAMPLE_RATE, mute_pin=None,
            leds="apa102", led_count=3, led_power_pin="GPIO12", led_power_active_high=False,
            button_pin="GPIO17", chime_device="seeed2micvoicec",
            busy={**_HAT_BUS, 12: "LED power (active low)", 17: "the HAT's button"}),
    Profile("respeaker-4mic", "Seeed ReSpeaker 4-Mic Array for Raspberry Pi (AC108 ADC)",
            input="seeed-4mic", device_channels=4, channel=0, rate=SAMPLE_RATE, mute_pin=None,
            leds="apa102", led_count=12, led_power_pin="GPIO5", led_power_active_high=True,
            busy={**_HAT_BUS, 5: "LED power (active high)"}),
    Profile("respeaker-usb-4mic", "Seeed ReSpeaker USB Mic Array v2.0 (XVF-3000, 6-channel "
            "firmware: channel 0 is the processed beam) with a GPIO switch and LED",
            input="ReSpeaker 4 Mic Array", device_channels=6, channel=0, rate=SAMPLE_RATE,
            mute_pin="GPIO22", leds="gpio", led_pins=("GPIO27",), button_pin="GPIO17",
            chime_device="ReSpeaker 4 Mic Array"),
    Profile("generic-usb", "any USB microphone, with a GPIO mute switch and recording LED",
            input="USB", device_channels=1, channel=-1, rate=0, mute_pin="GPIO22", leds="gpio",
            led_pins=("GPIO27",), button_pin="GPIO17"),
)}

LED_PIN_COUNT = {"gpio": 1, "pwm": 1, "rgb": 3, "apa102": 0, NONE: 0}


@dataclass(frozen=True)
class Pin:
    """A pin as resolved: its GPIO number and the config key (and text) it came from."""

    gpio: int
    key: str
    text: str

    def __str__(self) -> str:
        return pin_label(self.gpio)


@dataclass(frozen=True)
class HardwareSpec:
    """The ``[hardware]`` config resolved against its profile: every value concrete."""

    profile: Profile
    pin_factory: str
    mute: Pin | None
    mute_pull: str
    mute_active_high: bool
    mute_bounce_s: float
    leds: str
    led_pins: tuple[Pin, ...]
    led_active_high: bool
    led_count: int
    led_spi: str
    led_power: Pin | None
    led_power_active_high: bool
    led_brightness: float
    led_dim: float
    chime: bool
    chime_backend: str
    chime_device: str
    chime_pin: Pin | None
    chime_volume: float
    chime_gate_margin_s: float
    button: Pin | None
    button_bounce_s: float
    button_hold_s: float
    cancel_window_s: float

    def pins(self) -> list[Pin]:
        out = [p for p in (self.mute, self.led_power, self.chime_pin, self.button) if p]
        return out + list(self.led_pins)

    @property
    def uses_pins(self) -> bool:
        """Whether any part is on the pin factory (APA102 pixels too, through SPI)."""
        return bool(self.pins()) or self.leds == "apa102"


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"config key hardware.profile = {name!r} is not allowed; expected one "
                          f"of {', '.join(repr(p) for p in PROFILES)}") from None


def resolve(hw: HardwareConfig) -> HardwareSpec:
    """Check ``hw`` against its profile; a ConfigError names the key at fault."""
    prof = profile(hw.profile)

    def pin(key: str, given: str, default: str | None) -> Pin | None:
        text = given or default
        if text is None:
            raise ConfigError(
                f"config key hardware.{key} is not set, and the {prof.name} has no mute switch "
                f"of its own: wire one (see hardware/{prof.name}/README.md) and set "
                f"hardware.{key} = 'GPIO22', or say this device has none with "
                f"hardware.{key} = 'none'")
        if text.strip().lower() == NONE:
            return None
        return Pin(gpio_number(text, f"hardware.{key}"), f"hardware.{key}", text)

    mute = pin("mute_pin", hw.mute_pin, prof.mute_pin)
    if hw.mute_pull == "floating" and hw.mute_active_state == "auto":
        raise ConfigError("config key hardware.mute_active_state = 'auto' needs a pull resistor; "
                          "with hardware.mute_pull = 'floating' say 'high' or 'low'")
    active_high = {"high": True, "low": False}.get(hw.mute_active_state, hw.mute_pull == "up")

    leds = hw.leds or prof.leds
    texts = hw.led_pins if hw.led_pins else (list(prof.led_pins) if leds == prof.leds else [])
    led_pins = tuple(Pin(gpio_number(t, f"hardware.led_pins[{i}]"), f"hardware.led_pins[{i}]", t)
                     for i, t in enumerate(texts))
    if len(led_pins) != LED_PIN_COUNT[leds]:
        want = LED_PIN_COUNT[leds]
        raise ConfigError(
            f"config key hardware.led_pins = {list(texts)!r} does not fit hardware.leds = "
            f"{leds!r}: it takes {want} pin{'s' if want != 1 else ''}"
            + (" (red, green, blue)" if leds == "rgb" else "")
            + (" (it uses the SPI pins GPIO10 and GPIO11)" if leds == "apa102" else ""))
    same_leds = leds == prof.leds
    led_power = pin("led_power_pin", hw.led_power_pin,
                    prof.led_power_pin if same_leds else NONE)
    power_high = {"high": True, "low": False}.get(hw.led_power_active,
                                                  prof.led_power_active_high)
    chime_backend = hw.chime_backend or prof.chime_backend
    chime_pin = pin("chime_pin", hw.chime_pin, NONE)
    if hw.chime and chime_backend == "buzzer" and chime_pin is None:
        raise ConfigError("config key hardware.chime_pin is not set, and hardware.chime_backend "
                          "= 'buzzer' needs it; give the buzzer's pin (e.g. 'GPIO13'), or set "
                          "hardware.chime_backend = 'pyaudio'")
    spec = HardwareSpec(
        profile=prof, pin_factory=hw.pin_factory,
        mute=mute, mute_pull=hw.mute_pull, mute_active_high=active_high,
        mute_bounce_s=hw.mute_bounce_s,
        leds=leds, led_pins=led_pins, led_active_high=hw.led_active_high,
        led_count=hw.led_count or (prof.led_count if same_leds else 0) or
        (3 if leds == "apa102" else 0),
        led_spi=hw.led_spi, led_power=led_power, led_power_active_high=power_high,
        led_brightness=hw.led_brightness, led_dim=hw.led_dim,
        chime=hw.chime, chime_backend=chime_backend,
        chime_device=hw.chime_device or prof.chime_device,
        chime_pin=chime_pin, chime_volume=hw.chime_volume,
        chime_gate_margin_s=hw.chime_gate_margin_s,
        button=pin("button_pin", hw.button_pin, prof.button_pin),
        button_bounce_s=hw.button_bounce_s, button_hold_s=hw.button_hold_s,
        cancel_window_s=hw.cancel_window_s,
    )
    _check_conflicts(spec)
    return spec


def check_indicator(spec: HardwareSpec, upload_mode: str) -> None:
    """A device that uploads must show when it records: no ``leds = 'none'`` then."""
    if spec.leds == NONE and upload_mode != "off":
        raise ConfigError(
            f"config key hardware.leds = 'none' is not allowed while upload.mode = "
            f"{upload_mode!r}: a device that uploads must show when it records; fit an LED "
            "(hardware.leds) or set upload.mode = 'off'")


def check_uploading_parts(spec: HardwareSpec, upload_mode: str,
                          security: SecurityConfig) -> None:
    """A device that uploads uses real pins and chimes when it records, unless the owner
    opted out in ``[security]``: a downgrade is never quiet."""
    if upload_mode == "off":
        return
    if spec.pin_factory == "mock" and spec.uses_pins and not security.allow_simulated_pins:
        raise ConfigError(
            f"config key hardware.pin_factory = 'mock' is refused while upload.mode = "
            f"{upload_mode!r}: simulated pins mean no real mute switch or recording light; "
            "set hardware.pin_factory = 'auto', or accept it with "
            "security.allow_simulated_pins = true")
    if not spec.chime and not security.allow_silent_recording:
        raise ConfigError(
            f"config key hardware.chime = false is refused while upload.mode = "
            f"{upload_mode!r}: nobody would hear a recording start; set hardware.chime = "
            "true, or accept it with security.allow_silent_recording = true")


def _check_conflicts(spec: HardwareSpec) -> None:
    prof = spec.profile
    busy: dict[int, str] = dict(prof.busy)
    if spec.leds == "apa102":
        busy.setdefault(10, "SPI MOSI (APA102 LEDs)")
        busy.setdefault(11, "SPI SCLK (APA102 LEDs)")
        busy.setdefault(8, "SPI CE0 (held by the LEDs' SPI interface)")
    # The board's own button and LED power pins are busy only for the other parts.
    own = {(f"hardware.{key}", gpio_number(text, "profile"))
           for key, text in (("button_pin", prof.button_pin),
                             ("led_power_pin", prof.led_power_pin)) if text != NONE}
    seen: dict[int, Pin] = {}
    for p in spec.pins():
        if p.gpio in seen:
            other = seen[p.gpio]
            raise ConfigError(f"config key {p.key} = {p.text!r} is already used by {other.key} "
                              f"= {other.text!r}; each part needs its own pin")
        seen[p.gpio] = p
        if p.gpio in busy and (p.key, p.gpio) not in own:
            raise ConfigError(f"config key {p.key} = {p.text!r} is already in use: on the "
                              f"{prof.name}, {pin_label(p.gpio)} is wired to "
                              f"{busy[p.gpio]}; pick a free pin (see "
                              f"hardware/{prof.name}/README.md)")


def apply_audio(cfg: Config) -> Config:
    """``cfg`` with the profile's capture device, channel and rate where audio left the default."""
    prof = profile(cfg.hardware.profile)
    audio = cfg.audio
    changes: dict[str, Any] = {}
    if not audio.input and prof.input:
        changes["input"] = prof.input
    if audio.channel == -1 and prof.channel != -1:
        changes["channel"] = prof.channel
    if audio.rate == 0 and prof.rate:
        changes["rate"] = prof.rate
    return replace(cfg, audio=replace(audio, **changes)) if changes else cfg


def describe(p: Profile) -> str:
    """A few lines for `edge hardware profiles`."""
    def fmt(text: str | None) -> str:
        if text is None:
            return "none of its own: set hardware.mute_pin"
        return NONE if text == NONE else pin_label(gpio_number(text, "profile"))

    lines = [f"{p.name}: {p.summary}",
             f"  capture: {p.input or 'the default device'!r}, channel "
             f"{'average' if p.channel < 0 else p.channel} of {p.device_channels or 'any'}"
             f"{f', {p.rate} Hz' if p.rate else ''}",
             f"  mute switch: {fmt(p.mute_pin)}; button: {fmt(p.button_pin)}",
             f"  LEDs: {p.leds}" + (f" x{p.led_count} on SPI0" if p.leds == "apa102" else "")
             + (f" on {', '.join(fmt(t) for t in p.led_pins)}" if p.led_pins else "")
             + (f", power {fmt(p.led_power_pin)} active "
                f"{'high' if p.led_power_active_high else 'low'}"
                if p.led_power_pin != NONE else "")]
    return "\n".join(lines)
