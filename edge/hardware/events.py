"""Events the hardware publishes on the daemon's bus (beside the recorder's own).

The recorder already ends every aborted or cancelled activation with an
``ActivationEnded`` whose reason is ``aborted_by_mute`` or ``cancelled_by_user``;
these say what the person did, and what the device could not do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MuteChanged:
    muted: bool
    causes: tuple[str, ...]
    """What holds the mute: any of 'switch', 'soft', 'fault'; empty when listening."""
    t: float
    """Stream time, seconds."""
    wall_time: float


@dataclass(frozen=True)
class UnmuteRefused:
    """Someone asked to unmute and was not obeyed."""

    requested_by: str
    why: str
    t: float


@dataclass(frozen=True)
class CancelPressed:
    """"That wasn't for you": the button, during a recording or in the window after it."""

    cancelled: bool
    """False when there was nothing to cancel (no recording, and the window had closed)."""
    t: float
    wall_time: float


@dataclass(frozen=True)
class HardwareFault:
    """A part could not be used; the device is muted until it is fixed and restarted."""

    key: str
    """The config key at fault, e.g. 'hardware.mute_pin'."""
    message: str
