"""The hardware subsystem, attached to the daemon as a Plugin.

It builds the parts named by the ``[hardware]`` config (mute switch, indicator,
chimes, cancel button) on an explicitly passed gpiozero pin factory, and keeps them
in step with the recorder from the audio thread:

- gpiozero callbacks only raise a flag or ``daemon.post`` a command;
- after every frame and every command the indicator is brought up to date, chimes
  are started (with the recorder gated while they play), and a held mute is
  re-applied should any other command have unmuted;
- a part that cannot be used is a fault: the device stays muted, says why in the log
  (naming the config key) and shows the error look on whatever LEDs work.

>>> # plugin = HardwarePlugin.from_config(cfg); Daemon(cfg, source, plugins=[plugin])
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.errors import ConfigError, EdgeError, HardwareError
from edge.events import State
from edge.hardware.button import CancelButton
from edge.hardware.chime import (
    BuzzerOutput,
    ChimeOutput,
    ChimePlayer,
    PyAudioOutput,
    chime_seconds,
)
from edge.hardware.events import CancelPressed, HardwareFault
from edge.hardware.indicators import Indicator, Look, NoIndicator, build_indicator
from edge.hardware.mute import FrameGuard, MuteController, MuteSwitch
from edge.hardware.pins import hardware_error, make_factory, pin_label
from edge.hardware.profiles import HardwareSpec, resolve

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """The hardware as built; a part that failed is None and has a fault."""

    factory: Any = None
    switch: MuteSwitch | None = None
    indicator: Indicator = field(default_factory=NoIndicator)
    chime: ChimePlayer | None = None
    button: CancelButton | None = None
    faults: list[HardwareFault] = field(default_factory=list)

    def close(self, own_factory: bool = True) -> None:
        """Lights and buzzer off, pins released; each part on its own, so one failing stops none."""
        for name, part in (("indicator", self.indicator), ("chime", self.chime),
                           ("button", self.button), ("mute switch", self.switch)):
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                log.exception("closing the %s failed", name)
        if own_factory and self.factory is not None:
            try:
                self.factory.close()
            except Exception:
                log.exception("closing the pin factory failed")


def _fault(exc: Exception, key: str) -> HardwareFault:
    text = str(exc)
    first = text.split(" ", 1)[0]
    return HardwareFault(first if first.startswith("hardware.") else key, text)


def build_parts(spec: HardwareSpec, factory: Any = None,
                chime_output: ChimeOutput | None = None, chime_background: bool = True,
                on_switch: Callable[[bool], None] = lambda _m: None,
                on_press: Callable[[], None] = lambda: None,
                on_hold: Callable[[], None] = lambda: None,
                on_chime_failure: Callable[[Exception], None] | None = None) -> Parts:
    """Build every configured part; failures become faults, never exceptions."""
    parts = Parts(factory=factory)
    needs_pins = bool(spec.pins()) or spec.leds == "apa102"
    if parts.factory is None and needs_pins:
        try:
            parts.factory = make_factory(spec.pin_factory)
        except EdgeError as exc:
            parts.faults.append(_fault(exc, "hardware.pin_factory"))
            return parts
    if spec.mute is not None:
        try:
            parts.switch = MuteSwitch(spec.mute, spec.mute_pull, spec.mute_active_high,
                                      spec.mute_bounce_s, parts.factory, on_switch)
        except Exception as exc:
            parts.faults.append(_fault(hardware_error(spec.mute.key, spec.mute.text, exc),
                                       spec.mute.key))
    try:
        parts.indicator = build_indicator(spec, parts.factory)
    except EdgeError as exc:
        parts.faults.append(_fault(exc, "hardware.leds"))
    if spec.chime:
        try:
            output = chime_output or _chime_output(spec, parts.factory)
            parts.chime = ChimePlayer(output, chime_background, on_chime_failure)
        except EdgeError as exc:
            parts.faults.append(_fault(exc, "hardware.chime"))
    if spec.button is not None:
        try:
            parts.button = CancelButton(spec.button, spec.button_bounce_s, spec.button_hold_s,
                                        parts.factory, on_press, on_hold)
        except Exception as exc:
            parts.faults.append(_fault(hardware_error(spec.button.key, spec.button.text, exc),
                                       spec.button.key))
    return parts


def _chime_output(spec: HardwareSpec, factory: Any) -> ChimeOutput:
    if spec.chime_backend == "buzzer":
        assert spec.chime_pin is not None
        try:
            return BuzzerOutput.on_pin(spec.chime_pin, factory)
        except Exception as exc:
            raise hardware_error(spec.chime_pin.key, spec.chime_pin.text, exc) from None
    try:
        return PyAudioOutput(spec.chime_device, spec.chime_volume)
    except HardwareError:
        raise
    except Exception as exc:  # PortAudio's own failures (no ALSA, no devices)
        raise HardwareError(f"hardware.chime_backend = 'pyaudio': the audio output cannot be "
                            f"opened ({exc}); use hardware.chime_backend = 'buzzer', or "
                            "hardware.chime = false") from None


class HardwarePlugin:
    """Mute switch, indicator, chimes and cancel button, kept in step with the recorder."""

    def __init__(self, spec: HardwareSpec, factory: Any = None,
                 chime_output: ChimeOutput | None = None, chime_background: bool = True) -> None:
        self.spec = spec
        self._own_factory = factory is None
        self._factory = factory
        self._chime_output = chime_output
        self._chime_background = chime_background
        self.daemon: Any = None
        self.parts = Parts()
        self.mute: MuteController | None = None
        self.cancel_window_s = spec.cancel_window_s if spec.button is not None else 0.0
        self.look: Look | None = None
        self.looks: list[Look] = []
        """Every look shown, in order (the log of what a person could see)."""
        self._last_state: State | None = None

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> HardwarePlugin:
        spec = resolve(cfg.hardware)
        mode = cfg.upload.mode
        if spec.leds == "none" and mode != "off":
            raise ConfigError(
                f"config key hardware.leds = 'none' is not allowed while upload.mode = "
                f"{mode!r}: a device that uploads must show when it records; fit an LED "
                "(hardware.leds) or set upload.mode = 'off'")
        return cls(spec, **kwargs)

    # ---- Plugin -------------------------------------------------------------

    def attach(self, daemon: Any) -> None:
        self.daemon = daemon
        self.mute = MuteController(daemon.bus, daemon.clock)
        self.parts = build_parts(
            self.spec, self._factory, self._chime_output, self._chime_background,
            on_switch=self._switch_edge, on_press=self._pressed, on_hold=self._held,
            on_chime_failure=self._chime_failed)
        daemon.source = FrameGuard(daemon.source, self.mute.pending)
        daemon.on_frame.append(self._after_frame)
        daemon.after_command.append(self._sync)
        daemon.cancel_window_s = max(daemon.cancel_window_s, self.cancel_window_s)

    def started(self) -> None:
        """The recorder exists: read the switch before the first frame is captured."""
        self.daemon.post(self._start)

    def close(self) -> None:
        self.look = Look.OFF
        self.looks.append(Look.OFF)
        self.parts.close(own_factory=self._own_factory)

    # ---- for other subsystems (MQTT, a local command) -----------------------

    def request_mute(self, by: str) -> None:
        """Soft mute: adds to the switch; posted to the audio loop."""
        mute = self.mute
        assert mute is not None
        self.daemon.post(lambda rec: mute.soft_mute(rec, by))

    def request_unmute(self, by: str, remote: bool = True) -> None:
        """Clear the soft mute. Refused when remote; never clears the switch or a fault."""
        mute = self.mute
        assert mute is not None
        self.daemon.post(lambda rec: mute.soft_unmute(rec, by, remote))

    # ---- gpiozero threads: flag and post only -------------------------------

    def _switch_edge(self, muted: bool) -> None:
        mute = self.mute
        assert mute is not None
        if muted:
            mute.pending.set()
        self.daemon.post(lambda rec: mute.switch(rec, muted))

    def _pressed(self) -> None:
        self.daemon.post(self._cancel)

    def _held(self) -> None:
        self.daemon.post(self._toggle_soft_mute)

    def _chime_failed(self, exc: Exception) -> None:
        s = self.spec
        key, value = ("hardware.chime_pin", s.chime_pin.text if s.chime_pin else "") \
            if s.chime_backend == "buzzer" else ("hardware.chime_device", s.chime_device)
        fault = HardwareFault(key, f"{key} = {value!r}: a chime could not play ({exc}); "
                                   "rather than record without its audible alert, the "
                                   "device mutes")
        mute = self.mute
        assert mute is not None

        def give_up(rec: Any) -> None:
            self.parts.chime = None  # (on the audio thread) no more chimes, no more faults
            mute.fault(rec, fault)

        self.daemon.post(give_up)

    # ---- the audio thread -----------------------------------------------------

    def _start(self, recorder: Any) -> None:
        mute = self.mute
        assert mute is not None
        for fault in self.parts.faults:
            mute.fault(recorder, fault)
        switch = self.parts.switch
        if switch is not None:
            try:
                muted = switch.read()
            except Exception as exc:
                assert self.spec.mute is not None
                err = hardware_error(self.spec.mute.key, self.spec.mute.text, exc)
                mute.fault(recorder, HardwareFault(self.spec.mute.key,
                                                   f"{err} (the mute switch cannot be read)"))
            else:
                mute.switch(recorder, muted)
        self._log_summary(muted=mute.muted)

    def _cancel(self, recorder: Any) -> None:
        cancelled = recorder.cancel()
        if cancelled:
            log.info("cancelled by the button: the clip is discarded")
        else:
            log.info("button pressed, but there was nothing to cancel")
        self.daemon.bus.publish(CancelPressed(cancelled, recorder.t, self.daemon.clock.wall()))

    def _toggle_soft_mute(self, recorder: Any) -> None:
        mute = self.mute
        assert mute is not None
        if "soft" in mute.causes:
            mute.soft_unmute(recorder, "the button (held)", remote=False)
        else:
            mute.soft_mute(recorder, "the button (held)")

    def _after_frame(self) -> None:
        self._sync(self.daemon.recorder)

    def _sync(self, recorder: Any) -> None:
        """After each frame and command: hold the mute, chime on changes, refresh the LEDs."""
        mute = self.mute
        assert mute is not None
        mute.enforce(recorder)
        state = recorder.state
        if state is not self._last_state:
            if state is State.RECORDING:
                self._chime(recorder, "start")
            elif self._last_state is State.RECORDING:
                self._chime(recorder, "end")
            self._last_state = state
        self._show(recorder)

    def _chime(self, recorder: Any, kind: str) -> None:
        chime = self.parts.chime
        if chime is None:
            return
        # The microphone hears the chime: it must not count as speech or trigger a detection.
        recorder.gate(chime_seconds(kind) + self.spec.chime_gate_margin_s)
        chime.play(kind)

    def _show(self, recorder: Any) -> None:
        mute = self.mute
        assert mute is not None
        if mute.faults:
            look = Look.ERROR
        else:
            look = {State.RECORDING: Look.RECORDING, State.MUTED: Look.MUTED,
                    State.STOPPED: Look.OFF}.get(recorder.state, Look.LISTENING)
        if look is self.look:
            return
        self.look = look
        self.looks.append(look)
        try:
            self.parts.indicator.show(look)
        except Exception as exc:
            broken, self.parts.indicator = self.parts.indicator, NoIndicator()
            try:
                broken.close()
            except Exception:
                log.debug("closing the broken indicator failed too", exc_info=True)
            mute.fault(recorder, HardwareFault("hardware.leds", f"hardware.leds = "
                                               f"{self.spec.leds!r}: the indicator failed "
                                               f"({exc})"))

    def _log_summary(self, muted: bool) -> None:
        s = self.spec
        if s.mute is None:
            log.warning("no mute switch (hardware.mute_pin = 'none' on profile %s): this "
                        "device is muted only by command%s", s.profile.name,
                        " or by holding the button" if s.button and s.button_hold_s else "")
        parts = [f"profile {s.profile.name}",
                 f"mute switch {pin_label(s.mute.gpio)}" if s.mute else "no mute switch",
                 f"LEDs {s.leds}", f"chimes {s.chime_backend if s.chime else 'off'}",
                 f"button {pin_label(s.button.gpio)}" if s.button else "no button"]
        log.info("hardware: %s; %s", ", ".join(parts), "muted" if muted else "listening")
