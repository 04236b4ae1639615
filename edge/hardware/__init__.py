"""The device's hardware: mute switch, recording indicator, chimes, cancel button, profiles.

- ``profiles``: boards by name (ReSpeaker HATs, USB arrays, generic USB) and resolving
  the ``[hardware]`` config against one;
- ``pins``: pin names and the explicitly passed gpiozero pin factory;
- ``mute``: the switch, the soft mute that only adds to it, and the frame guard;
- ``indicators``: LED looks on gpiozero LEDs and APA102 pixels;
- ``chime``: start and end chimes on PyAudio or a buzzer;
- ``button``: "that wasn't for you";
- ``plugin``: all of it, kept in step with the recorder (its state listener).

gpiozero and PyAudio are imported only when a part is built.
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "plugin": ("HardwarePlugin",),
    "profiles": ("PROFILES", "HardwareSpec", "resolve"),
    "mute": ("MuteController", "MuteSwitch", "FrameGuard"),
    "indicators": ("Look",),
})
