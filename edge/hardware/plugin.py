"""The hardware subsystem: mute switch, indicator, chimes and cancel button.

It builds the parts named by the ``[hardware]`` config on an explicitly passed
gpiozero pin factory, and keeps them in step with the recorder on the audio thread:

- gpiozero callbacks only raise a flag or post a command to the audio loop;
- the recorder tells it of each state change (it is one of the recorder's state
  listeners): it shows the look, starts a chime (gating the recorder while it plays),
  and re-applies a held mute should any other command have unmuted;
- a part that cannot be used is a fault: the device stays muted, says why in the log
  (naming the config key) and shows the error look on whatever LEDs work.

The composition root (edge.compose) wraps the audio source in this subsystem's
``FrameGuard``, passes it to the recorder as a state listener, and runs its ``on_frame``
hook, which reads the mute switch again every few hundred ms in case an edge was lost.
A voice assistant (edge.assist) shows its turn's phases here and rings its finished timers
on the chime (``show_turn``, ``request_ring``).

Why one module of over 400 lines: every rule here decides on the same audio-thread state
(the mute causes, the look shown, the chime, the bell) at the same recorder changes;
split, each part would need the others' state to decide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.audio.frames import FRAME_S
from edge.audio.sources import AudioSource
from edge.clock import Clock
from edge.config import Config
from edge.errors import EdgeError
from edge.hardware.button import CancelButton
from edge.hardware.chime import (
    BuzzerOutput,
    ChimeOutput,
    ChimePlayer,
    chime_seconds,
    open_pyaudio_output,
)
from edge.hardware.indicators import Indicator, Look, NoIndicator, build_indicator
from edge.hardware.mute import FrameGuard, MuteController, MuteSwitch
from edge.hardware.pins import hardware_error, make_factory, pin_label
from edge.hardware.profiles import HardwareSpec, resolve
from edge.pipeline.events import CancelPressed, EventBus, HardwareFault, State, StateChanged
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Commands
from edge.recent import Recent

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)

STOPPING = ("shutdown", "end_of_stream")
"""Reasons of the recorder's last state changes as the daemon stops."""

SWITCH_RECHECK_FRAMES = 4
"""Frames (4 x 80 ms: 320 ms) between reads of the mute switch on the audio thread. An edge
gpiozero never delivered (a missed interrupt, a dead callback thread) is caught by the next
read: the device mutes within this many frames of the switch moving, whatever the edges."""
RING_S = 60.0
"""How long a finished timer (a voice assistant's) rings, unless silenced sooner."""
RING_EVERY_S = 2.0
"""Seconds between the timer bell's chimes."""


@dataclass
class Parts:
    """The hardware as built; a part that failed is None and has a fault."""

    factory: Factory | None = None
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


def build_parts(spec: HardwareSpec, factory: Factory | None = None,
                chime_output: ChimeOutput | None = None, chime_background: bool = True,
                on_switch: Callable[[bool], None] = lambda _m: None,
                on_press: Callable[[], None] = lambda: None,
                on_hold: Callable[[], None] = lambda: None,
                on_chime_failure: Callable[[Exception], None] | None = None) -> Parts:
    """Build every configured part; failures become faults, never exceptions."""
    parts = Parts(factory=factory)
    if parts.factory is None and spec.uses_pins:
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


def _chime_output(spec: HardwareSpec, factory: Factory | None) -> ChimeOutput:
    if spec.chime_backend == "buzzer":
        assert spec.chime_pin is not None
        try:
            return BuzzerOutput.on_pin(spec.chime_pin, factory)
        except Exception as exc:
            raise hardware_error(spec.chime_pin.key, spec.chime_pin.text, exc) from None
    return open_pyaudio_output(spec.chime_device, spec.chime_volume)


class HardwarePlugin:
    """Mute switch, indicator, chimes and cancel button, kept in step with the recorder."""

    def __init__(self, spec: HardwareSpec, bus: EventBus, clock: Clock, commands: Commands,
                 factory: Factory | None = None, chime_output: ChimeOutput | None = None,
                 chime_background: bool = True) -> None:
        self.spec = spec
        self.bus = bus
        self.clock = clock
        self.commands = commands
        self._own_factory = factory is None
        self.mute = MuteController(bus, clock, on_change=self._show)
        self.parts = build_parts(
            spec, factory, chime_output, chime_background,
            on_switch=self._switch_edge, on_press=self._pressed, on_hold=self._held,
            on_chime_failure=self._chime_failed)
        self.look: Look | None = None
        self.looks: Recent[Look] = Recent()
        """The looks shown, in order, the last few hundred (what a person could see)."""
        self.turn_look: Look | None = None
        """A voice-assistant turn's phase after its audio (thinking, replying, error), shown
        while the device listens; None: no turn in progress (audio thread only)."""
        self._frames_to_recheck = SWITCH_RECHECK_FRAMES
        self.ring_frames = 0
        """Frames the timer bell still rings for (0: quiet; audio thread only)."""
        self._frames_to_ring = 0

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus, clock: Clock, commands: Commands,
                    **kwargs: Any) -> HardwarePlugin:
        return cls(resolve(cfg.hardware), bus, clock, commands, **kwargs)

    @property
    def cancel_window_s(self) -> float:
        """How long a finished clip waits in memory for the cancel button (0: no button)."""
        return self.spec.cancel_window_s if self.spec.button is not None else 0.0

    def guard(self, source: AudioSource) -> FrameGuard:
        """The source as the audio loop must read it: a frame in flight at a mute edge is
        silenced."""
        return FrameGuard(source, self.mute.pending)

    def start(self) -> None:
        """Read the switch before the first frame is captured."""
        self.commands.post(self._start)

    def close(self) -> None:
        if self.look is not Look.OFF:
            self.look = Look.OFF
            self.looks.append(Look.OFF)
        self.parts.close(own_factory=self._own_factory)

    # ---- for other subsystems (MQTT, a local command): any thread -----------------------

    def request_mute(self, by: str) -> None:
        """Soft mute: adds to the switch; posted to the audio loop."""
        self.commands.post(lambda rec: self.mute.soft_mute(rec, by))

    def request_unmute(self, by: str, remote: bool = True) -> None:
        """Clear the soft mute. Refused when remote; never clears the switch or a fault."""
        def unmute(rec: Recorder) -> None:
            self.mute.soft_unmute(rec, by, remote)

        self.commands.post(unmute)

    def show_turn(self, look: Look | None, recorder: Recorder | None = None) -> None:
        """Audio thread: a voice-assistant turn is at ``look`` (THINKING, REPLYING, ERROR;
        None when over). Shown now with ``recorder``, else at the recorder's next change."""
        self.turn_look = look
        if recorder is not None:
            self._show(recorder)

    def request_turn_look(self, look: Look | None) -> None:
        """Any thread: ``show_turn``, posted to the audio loop."""
        self.commands.post(lambda rec: self.show_turn(look, rec))

    @property
    def can_ring(self) -> bool:
        """Whether a finished timer can ring: the chime is on."""
        return self.parts.chime is not None

    def request_ring(self) -> None:
        """Any thread: a timer finished. The chime rings every ``RING_EVERY_S`` until the
        button is pressed, a wake word is heard, or ``RING_S`` pass."""
        def ring(_rec: Recorder) -> None:
            if self.parts.chime is None:
                return
            if not self.ring_frames:
                log.info("a timer finished: ringing until the button is pressed, a wake word "
                         "is heard, or %g s pass", RING_S)
            self.ring_frames = round(RING_S / FRAME_S)
            self._frames_to_ring = 0

        self.commands.post(ring)

    def _quiet(self, by: str) -> bool:
        """Stop the timer bell; whether it was ringing."""
        if not self.ring_frames:
            return False
        self.ring_frames = 0
        log.info("the timer bell stopped: %s", by)
        return True

    def soft_mute_soon(self, on: bool, by: str) -> Future[tuple[bool, tuple[str, ...]]]:
        """Set or clear the soft mute, posted to the audio loop at once (it runs before the next
        frame) without waiting: a future of whether the device is muted then, and what holds
        it. Clearing is a local unmute: the caller decides whether a remote request may."""
        def apply(rec: Recorder) -> tuple[bool, tuple[str, ...]]:
            if on:
                self.mute.soft_mute(rec, by)
            else:
                self.mute.soft_unmute(rec, by, remote=False)
            return self.mute.muted, self.mute.held_by

        return self.commands.submit(apply)

    # ---- gpiozero threads: flag and post only -------------------------------------------

    def _switch_edge(self, muted: bool) -> None:
        if muted:
            self.mute.pending.set()
        self.commands.post(lambda rec: self.mute.switch(rec, muted))

    def _pressed(self) -> None:
        self.commands.post(self._cancel)

    def _held(self) -> None:
        self.commands.post(self._toggle_soft_mute)

    def _chime_failed(self, exc: Exception) -> None:
        s = self.spec
        key, value = ("hardware.chime_pin", s.chime_pin.text if s.chime_pin else "") \
            if s.chime_backend == "buzzer" else ("hardware.chime_device", s.chime_device)
        fault = HardwareFault(key, f"{key} = {value!r}: a chime could not play ({exc}); "
                                   "rather than record without its audible alert, the "
                                   "device mutes")

        def give_up(rec: Recorder) -> None:
            self.parts.chime = None  # (on the audio thread) no more chimes, no more faults
            self.mute.fault(rec, fault)

        self.commands.post(give_up)

    # ---- the audio thread -----------------------------------------------------------------

    def _start(self, recorder: Recorder) -> None:
        mute = self.mute
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
        self._show(recorder)
        self._log_summary(muted=mute.muted)

    def on_frame(self) -> None:
        """The audio loop's frame hook (it runs only while listening): every
        ``SWITCH_RECHECK_FRAMES`` frames, read the switch again. A switch in the mute position
        that the mute does not hold is an edge that was lost: mute, and say so (fail
        closed); a switch that cannot be read any more is a fault. A ringing timer bell
        chimes every ``RING_EVERY_S``."""
        if self.ring_frames:
            self._ring_frame()
        self._frames_to_recheck -= 1
        if self._frames_to_recheck > 0:
            return
        self._frames_to_recheck = SWITCH_RECHECK_FRAMES
        switch, pin = self.parts.switch, self.spec.mute
        if switch is None or pin is None:
            return
        try:
            muted = switch.read()
        except Exception as exc:
            err = hardware_error(pin.key, pin.text, exc)
            fault = HardwareFault(pin.key, f"{err} (the mute switch cannot be read)")
            self.commands.post(lambda rec: self.mute.fault(rec, fault))
            return
        if muted and "switch" not in self.mute.causes and not self.mute.pending.is_set():
            log.warning("the mute switch on %s reads mute but no edge was seen: muting "
                        "(fail closed)", pin_label(pin.gpio))
            self.mute.pending.set()
            self.commands.post(lambda rec: self.mute.switch(rec, True))

    def _ring_frame(self) -> None:
        self.ring_frames -= 1
        if not self.ring_frames:
            log.info("the timer bell stopped: it rang for %g s", RING_S)
        elif self._frames_to_ring <= 0:
            self._frames_to_ring = round(RING_EVERY_S / FRAME_S) - 1  # this frame counts
            self.commands.post(lambda rec: self._chime(rec, "timer"))
        else:
            self._frames_to_ring -= 1

    def _cancel(self, recorder: Recorder) -> None:
        if self._quiet("the button was pressed"):
            return  # the press was for the bell: nothing is cancelled
        cancelled = recorder.cancel()
        if cancelled:
            log.info("cancelled by the button: the clip is discarded")
        else:
            log.info("button pressed, but there was nothing to cancel")
        self.bus.publish(CancelPressed(cancelled, recorder.t, self.clock.wall()))

    def _toggle_soft_mute(self, recorder: Recorder) -> None:
        if "soft" in self.mute.causes:
            self.mute.soft_unmute(recorder, "the button (held)", remote=False)
        else:
            self.mute.soft_mute(recorder, "the button (held)")

    def state_changed(self, recorder: Recorder, change: StateChanged) -> None:
        """The recorder's state listener: hold the mute, chime on changes, show the look."""
        if change.reason in STOPPING:
            return  # the daemon is stopping: ``close`` turns the lights off, no chime plays
        self.mute.enforce(recorder)
        if recorder.state is not State(change.new):
            return  # enforce changed it again; that change is reported in its own right
        if change.new == State.RECORDING:
            self._quiet("a wake word was heard")
            self._chime(recorder, "start")
        elif change.old == State.RECORDING:
            self._chime(recorder, "end")
        self._show(recorder)

    def _chime(self, recorder: Recorder, kind: str) -> None:
        chime = self.parts.chime
        if chime is None:
            return
        # The microphone hears the chime: it must not count as speech or trigger a detection.
        recorder.gate(chime_seconds(kind) + self.spec.chime_gate_margin_s)
        chime.play(kind)

    def _show(self, recorder: Recorder) -> None:
        mute = self.mute
        if mute.faults:
            look = Look.ERROR
        else:  # the recording light first: while audio is captured, nothing else is shown
            look = {State.RECORDING: Look.RECORDING, State.MUTED: Look.MUTED,
                    State.STOPPED: Look.OFF}.get(recorder.state, self.turn_look or Look.LISTENING)
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
