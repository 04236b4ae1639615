"""The mute: a switch that is always obeyed, a soft mute that can only add to it.

Three causes can hold the device muted, and it listens only when none does:

- ``switch``: the GPIO switch is in the mute position (read at start, then on every edge,
  and again every ``SWITCH_RECHECK_FRAMES`` while listening, so a lost edge still mutes);
- ``soft``: a command muted it (MQTT, the button held down, or any command that called
  ``recorder.mute`` directly: the controller adopts that as a soft mute when the recorder
  reports the change);
- ``fault``: a part could not be used (fail-closed; cleared only by a restart).

Nothing remote can unmute. A remote unmute is refused; a local one (the button held
down) clears only the soft mute; turning the switch to listen clears the switch and
the soft mute, because the person at the device has the last word. A fault never
clears. Every decision runs on the audio thread; the switch's gpiozero callback only
raises a flag and posts a command.

>>> # commands.post(lambda rec: controller.soft_mute(rec, "mqtt"))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import numpy as np

from edge.audio.sources import AudioSource
from edge.clock import Clock
from edge.hardware.profiles import Pin
from edge.pipeline.events import EventBus, HardwareFault, MuteChanged, State, UnmuteRefused
from edge.pipeline.recorder import Recorder

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)

CAUSES = ("switch", "soft", "fault")


class MuteController:
    """Owns the mute causes; applies them to the recorder on the audio thread."""

    def __init__(self, bus: EventBus, clock: Clock,
                 on_change: Callable[[Recorder], None] | None = None) -> None:
        self.bus = bus
        self.clock = clock
        self.on_change = on_change
        """Told (on the audio thread) after the causes changed: the indicator follows."""
        self.causes: set[str] = set()
        self.faults: list[HardwareFault] = []
        self.pending = threading.Event()
        """Set by the switch's callback the instant it mutes; the frame guard reads it."""

    @property
    def muted(self) -> bool:
        return bool(self.causes)

    @property
    def held_by(self) -> tuple[str, ...]:
        """The causes holding the mute, in their fixed order."""
        return tuple(c for c in CAUSES if c in self.causes)

    # ---- audio thread only ------------------------------------------------

    def switch(self, recorder: Recorder, muted: bool) -> None:
        """The switch was read (at start) or moved."""
        if muted:
            self._change(recorder, add={"switch"}, reason="switch")
        else:
            self._change(recorder, remove={"switch", "soft"}, reason="switch")
        self.pending.clear()

    def soft_mute(self, recorder: Recorder, by: str) -> None:
        self._change(recorder, add={"soft"}, reason=f"soft mute by {by}")

    def soft_unmute(self, recorder: Recorder, by: str, remote: bool) -> bool:
        """Clear the soft mute; refused when ``remote``. True when it is now listening."""
        if remote:
            self._refuse(recorder, by, "nothing remote can unmute; unmute at the device")
            return False
        held = self.causes - {"soft"}
        if held:
            self._refuse(recorder, by, f"still muted by {', '.join(sorted(held))}")
        self._change(recorder, remove={"soft"}, reason=f"soft unmute by {by}")
        return not self.muted

    def fault(self, recorder: Recorder, fault: HardwareFault) -> None:
        if fault in self.faults:
            return
        log.error("%s; the device stays muted until this is fixed and it is restarted",
                  fault.message)
        self.faults.append(fault)
        self.bus.publish(fault)
        self._change(recorder, add={"fault"}, reason=f"fault: {fault.key}")

    def enforce(self, recorder: Recorder) -> None:
        """After any state change: a mute held here is re-applied; a mute made elsewhere is
        adopted."""
        if self.muted and recorder.state not in (State.MUTED, State.STOPPED):
            log.warning("an unmute was overridden: the device is held muted by %s",
                        ", ".join(sorted(self.causes)))
            recorder.mute(self._reason(), keep_held=not self.causes & {"switch", "soft"})
        elif not self.muted and recorder.state is State.MUTED:
            self._change(recorder, add={"soft"}, reason="muted by command")

    # ---- internals ----------------------------------------------------------

    def _reason(self) -> str:
        return "+".join(c for c in CAUSES if c in self.causes)

    def _change(self, recorder: Recorder, add: Collection[str] = (), remove: Collection[str] = (),
                reason: str = "") -> None:
        before = set(self.causes)
        self.causes |= set(add)
        self.causes -= set(remove) - {"fault"}
        # A person muted (the switch, a soft mute): the clips still in their cancel window are
        # the last utterance, and go with it. A fault alone keeps them (no finished clip is
        # lost to a fault); they are written at shutdown.
        by_person = bool((set(add) - before) & {"switch", "soft"})
        if self.muted and recorder.state not in (State.MUTED, State.STOPPED):
            recorder.mute(self._reason(), keep_held=not by_person)
        elif by_person:
            recorder.drop_held()
        elif not self.muted and recorder.state is State.MUTED:
            recorder.unmute(reason)
        if self.causes != before:  # the log line is the activity log's (edge.service.activity)
            self.bus.publish(MuteChanged(self.muted, self.held_by, recorder.t,
                                         self.clock.wall(), reason))
            if self.on_change is not None:
                self.on_change(recorder)

    def _refuse(self, recorder: Recorder, by: str, why: str) -> None:
        log.warning("unmute by %s refused: %s", by, why)
        self.bus.publish(UnmuteRefused(by, why, recorder.t))


class MuteSwitch:
    """A GPIO input for the mute switch. Its callbacks run on gpiozero's thread."""

    def __init__(self, pin: Pin, pull: str, active_high: bool, bounce_s: float,
                 factory: Factory | None, on_edge: Callable[[bool], None]) -> None:
        from gpiozero import DigitalInputDevice

        pull_up = {"up": True, "down": False, "floating": None}[pull]
        self._active_high = active_high
        # gpiozero fixes "active" from the pull; we track the pin level and decide ourselves.
        self._active_is_high = pull_up is not True
        self._on_edge = on_edge
        self.device = DigitalInputDevice(
            f"GPIO{pin.gpio}", pull_up=pull_up, active_state=True if pull_up is None else None,
            bounce_time=bounce_s or None, pin_factory=factory)
        self.device.when_activated = self._activated
        self.device.when_deactivated = self._deactivated

    def read(self) -> bool:
        """True when the switch is in the mute position (reads the pin now)."""
        return self._muted(bool(self.device.value))

    def _muted(self, active: bool) -> bool:
        level_high = active == self._active_is_high
        return level_high == self._active_high

    def _activated(self) -> None:
        self._on_edge(self._muted(True))

    def _deactivated(self) -> None:
        self._on_edge(self._muted(False))

    def close(self) -> None:
        self.device.close()


class FrameGuard:
    """Wraps the audio source: a frame read while a mute edge is pending reaches nothing.

    The loop honours a mute before its next read; this covers the one frame already in
    flight when the switch moved: its audio is replaced by silence.
    """

    def __init__(self, source: AudioSource, pending: threading.Event) -> None:
        self.inner = source
        self.pending = pending
        self.silenced = 0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()

    def close(self) -> None:
        self.inner.close()

    def read(self) -> np.ndarray | None:
        frame = self.inner.read()
        if frame is not None and self.pending.is_set():
            self.silenced += 1
            return np.zeros_like(frame)
        return frame
