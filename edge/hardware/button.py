""""That wasn't for you": the button that cancels a recording.

A press during a recording, or within ``cancel_window_s`` after it (the finished
clip is held in memory that long), discards the clip: it is never written and never
uploaded, and the activation ends as ``cancelled_by_user``. Holding the button down
for ``button_hold_s`` toggles a soft mute, which is how a board without a mute switch
is muted by hand. The callbacks run on gpiozero's thread and only post commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.hardware.profiles import Pin

if TYPE_CHECKING:
    from gpiozero.pins import Factory


class CancelButton:
    def __init__(self, pin: Pin, bounce_s: float, hold_s: float, factory: Factory | None,
                 on_press: Callable[[], None], on_hold: Callable[[], None]) -> None:
        from gpiozero import Button

        self.device = Button(f"GPIO{pin.gpio}", pull_up=True, bounce_time=bounce_s or None,
                             hold_time=hold_s, pin_factory=factory)
        self.device.when_pressed = on_press
        if hold_s > 0:
            self.device.when_held = on_hold

    def close(self) -> None:
        self.device.close()
