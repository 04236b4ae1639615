"""The doctor's checks of the parts the running service holds: the microphone, the mute
switch and the LEDs.

Each opens the real part as the service would (``PyAudioSource``, ``MuteSwitch``,
``build_indicator``) on the factory it is given, so a test passes a fake PortAudio or
gpiozero's ``MockFactory``. While the service runs these parts are busy, which
:class:`~edge.service.doctor.Doctor` adds to the fix of their failures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.config import Config
from edge.errors import EdgeError
from edge.service.findings import Finding, fail, ok, warn

if TYPE_CHECKING:
    from gpiozero import Factory

    from edge.audio.portaudio import PyAudioFactory
    from edge.hardware.profiles import HardwareSpec

HELD_BY_SERVICE = ("audio", "mute", "leds")
"""The checks that fail while the service runs: it holds the microphone and the pins."""


def check_audio(cfg: Config, pa_factory: PyAudioFactory | None,
                seconds: float) -> Iterator[Finding]:
    """Read ``seconds`` of audio from the configured capture device and judge it."""
    from edge.audio.capture import PyAudioSource
    from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE
    from edge.errors import AudioDeviceError, AudioFormatError
    from edge.hardware.profiles import apply_audio

    audio = apply_audio(cfg).audio
    if audio.input and (Path(audio.input).suffix.lower() in (".wav", ".flac")
                        or Path(audio.input).is_file()):
        yield warn("audio", f"audio.input = {audio.input!r} is a file: the service replays "
                            "it instead of listening",
                   "set audio.input to a capture device (see `edge devices`), or '' for "
                   "the default one")
        return
    src = PyAudioSource(audio.input, audio.channel, audio.rate, pa_factory=pa_factory,
                        stall_timeout_s=2.0)
    want = max(2, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))
    try:
        dev = src.check()
        src.start()
        frames = [src.read()]  # the rate is timed from the first frame: opening is slow
        t0 = time.monotonic()
        frames += [src.read() for _ in range(want - 1)]
        elapsed = max(time.monotonic() - t0, 1e-6)
    except (AudioDeviceError, AudioFormatError) as exc:
        yield fail("audio", str(exc), "check the microphone is plugged in and listed by "
                   "`edge devices` (as a user in the audio group: sudo -u edge-recorder), "
                   "and audio.input, audio.channel and audio.rate; a HAT needs its driver "
                   "(README: Troubleshooting)")
        return
    finally:
        src.stop()
    got_s = (len(frames) - 1) * FRAME_S
    ratio = got_s / elapsed
    samples = np.concatenate(frames)
    peak = int(np.abs(samples.astype(np.int32)).max())
    where = f"{dev.describe()}, channel {'average' if audio.channel < 0 else audio.channel}"
    if ratio < 0.9:
        yield fail("audio", f"{where} delivered {got_s:.1f} s of audio in {elapsed:.1f} s "
                            f"({ratio:.0%} of real time): the service would fall behind",
                   "check the sample rate (audio.rate = 0 takes the device's own), USB power "
                   "(a powered hub or the official supply) and `dmesg` for xruns or resets")
        return
    if peak == 0:
        yield fail("audio", f"{where} delivers only digital silence (every sample is 0)",
                   "the capture path is switched off or muted: open `alsamixer -c <card>`, "
                   "press F4 and raise or unmute the capture controls (ReSpeaker 2-Mic: "
                   "'Left/Right Input Mixer Boost' on, 'Capture' up), then `sudo alsactl "
                   "store`")
        return
    if np.all(samples == samples[0]):
        yield fail("audio", f"{where} delivers a constant value ({int(samples[0])}): the "
                            "converter is stuck",
                   "reload the driver (reboot); check the HAT is seated and its overlay "
                   "matches the board (README: Troubleshooting)")
        return
    dbfs = 20 * np.log10(peak / 32768.0)
    rate = f"{ratio:.2f}x real time" if ratio < 1.5 else "faster than real time (buffered)"
    detail = f"{where}: {len(frames)} frames in {elapsed:.1f} s ({rate}), peak {dbfs:.0f} dBFS"
    if dbfs < -70:
        yield warn("audio", detail + ": very quiet, a wake word may not be heard",
                   "raise the capture gain in alsamixer, or move the microphone closer")
        return
    overflows = src.overflows
    yield ok("audio", detail + (f", {overflows} overflow(s)" if overflows else ""))


@contextlib.contextmanager
def _pins(spec: HardwareSpec, given: Factory | None) -> Iterator[Factory]:
    """The pin factory to use: the one given (kept open), else the configured one (closed)."""
    if given is not None:
        yield given
        return
    from edge.hardware.pins import make_factory

    factory = make_factory(spec.pin_factory)
    try:
        yield factory
    finally:
        with contextlib.suppress(Exception):
            factory.close()


def read_switch(spec: HardwareSpec, pin_factory: Factory | None) -> bool:
    """Whether the mute switch (``spec.mute``, not None) is in the mute position now; the
    pin library's own exception when it cannot be read."""
    from edge.hardware.mute import MuteSwitch

    assert spec.mute is not None
    with _pins(spec, pin_factory) as factory:
        switch = MuteSwitch(spec.mute, spec.mute_pull, spec.mute_active_high,
                            spec.mute_bounce_s, factory, lambda _m: None)
        try:
            return switch.read()
        finally:
            switch.close()


def audio_held_by_mute(spec: HardwareSpec, pin_factory: Factory | None) -> Finding | None:
    """Why the microphone must stay closed (the switch says mute, or cannot be read: the
    service would not listen either), or None when the doctor may open it."""
    if spec.mute is None:
        return None
    from edge.hardware.pins import hardware_error

    try:
        muted = read_switch(spec, pin_factory)
    except Exception as exc:  # gpiozero and the pin libraries raise their own types
        why = exc if isinstance(exc, EdgeError) else hardware_error(spec.mute.key,
                                                                     spec.mute.text, exc)
        return warn("audio", f"not checked: the mute switch cannot be read ({why}), so the "
                             "microphone was not opened",
                    "fix the mute finding, then run the doctor again")
    if muted:
        return warn("audio", f"not checked: the mute switch on {spec.mute} is in the mute "
                             "position, so the microphone was not opened",
                    "move the switch to listen and run the doctor again to check the "
                    "microphone")
    return None


def check_mute(spec: HardwareSpec, pin_factory: Factory | None) -> Iterator[Finding]:
    """Read the mute switch once and say which way it is."""
    from edge.hardware.pins import hardware_error

    if spec.mute is None:
        board = ("set hardware.profile to your board" if spec.profile.name == "no-gpio"
                 else f"see hardware/{spec.profile.name}/README.md")
        yield warn("mute", f"no mute switch (hardware.mute_pin = 'none', profile "
                           f"{spec.profile.name}): only a soft mute can stop listening",
                   f"wire a switch and set hardware.mute_pin ({board})")
        return
    fix = (f"check hardware.mute_pin and the wiring in hardware/{spec.profile.name}/"
           "README.md; `edge hardware profiles` lists the pins each board uses")
    try:
        muted = read_switch(spec, pin_factory)
    except EdgeError as exc:
        yield fail("mute", str(exc), fix)
        return
    except Exception as exc:  # gpiozero and the pin libraries raise their own types
        yield fail("mute", str(hardware_error(spec.mute.key, spec.mute.text, exc)), fix)
        return
    level = "high" if muted == spec.mute_active_high else "low"
    state = ("MUTED: the service will not listen until the switch is moved" if muted
             else "listening")
    yield ok("mute", f"mute switch on {spec.mute} (pull {spec.mute_pull}) reads {level}: "
                     f"{state}")


def check_leds(spec: HardwareSpec, pin_factory: Factory | None,
               on_s: float) -> Iterator[Finding]:
    """Light the indicator for ``on_s`` seconds, then turn it off."""
    from edge.hardware.indicators import Look, build_indicator

    if spec.leds == "none":
        yield ok("leds", f"no indicator fitted (profile {spec.profile.name})")
        return
    where = (f"{spec.led_count} APA102 pixel(s) on SPI0" if spec.leds == "apa102"
             else ", ".join(str(p) for p in spec.led_pins))
    try:
        with _pins(spec, pin_factory) as factory:
            indicator = build_indicator(spec, factory)
            try:
                indicator.show(Look.RECORDING)
                time.sleep(on_s)
                indicator.show(Look.OFF)
            finally:
                indicator.close()
    except EdgeError as exc:
        yield fail("leds", str(exc),
                   f"check hardware.leds and its pins against hardware/{spec.profile.name}/"
                   "README.md")
        return
    yield ok("leds", f"{spec.leds} indicator on {where}: lit for {on_s:g} s and "
                     "turned off (if you saw nothing, check its wiring and "
                     "hardware.led_active_high)")
