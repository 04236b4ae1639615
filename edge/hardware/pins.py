"""Pin names, the pin factory seam, and errors that name the config key at fault.

Pins are written in the config as ``GPIO17`` (or ``BCM17``, or ``17``) or by their
header position, ``BOARD11`` (or ``J8:11``); all become a GPIO number here. The
pin factory is always passed in explicitly: gpiozero's process-wide default is
never used, so a test's ``MockFactory`` can never leak into a live device.

>>> gpio_number("BOARD11", "hardware.button_pin")
17
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

from edge.errors import ConfigError, HardwareError

log = logging.getLogger(__name__)

NONE = "none"
"""The value that says, explicitly, that a part is not fitted."""

HEADER = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}
"""Physical pin of the 40-pin header -> GPIO number."""
POWER_PINS = {1: "3V3", 17: "3V3", 2: "5V", 4: "5V"}
GROUND_PINS = (6, 9, 14, 20, 25, 30, 34, 39)

_GPIO = re.compile(r"^(?:GPIO|BCM)?(\d+)$", re.IGNORECASE)
_BOARD = re.compile(r"^(?:BOARD|J8:)(\d+)$", re.IGNORECASE)
PIN_HINT = "a header GPIO such as 'GPIO22' (or 'BOARD15' by header position)"

FACTORIES = ("auto", "mock", "lgpio", "rpigpio", "native")


def gpio_number(value: str, key: str) -> int:
    """The GPIO number a pin name means; a ConfigError naming ``key`` if it means none."""
    text = value.strip()
    m = _GPIO.match(text)
    if m:
        n = int(m.group(1))
        if 0 <= n <= 27:
            return n
        raise ConfigError(f"config key {key} = {value!r} is not a valid pin: the 40-pin header "
                          f"has GPIO0 to GPIO27; expected {PIN_HINT}")
    m = _BOARD.match(text)
    if m:
        pos = int(m.group(1))
        if pos in HEADER:
            return HEADER[pos]
        what = POWER_PINS.get(pos) or ("ground" if pos in GROUND_PINS else None)
        detail = f"header pin {pos} is {what}, not a GPIO" if what else \
            f"the header has pins 1 to 40, not {pos}"
        raise ConfigError(f"config key {key} = {value!r} is not a valid pin: {detail}; "
                          f"expected {PIN_HINT}")
    raise ConfigError(f"config key {key} = {value!r} is not a pin name; expected {PIN_HINT}, "
                      f"or {NONE!r} when nothing is fitted")


def pin_label(n: int) -> str:
    """'GPIO17 (pin 11)': what a person wires to."""
    pos = next((p for p, g in HEADER.items() if g == n), None)
    return f"GPIO{n} (pin {pos})" if pos else f"GPIO{n}"


def make_factory(name: str) -> Any:
    """A gpiozero pin factory by config name; never gpiozero's global default.

    ``auto`` tries lgpio, then RPi.GPIO, then the native factory, and fails (never falls
    back to simulated pins) when none can open the GPIO chip.
    """
    key = "hardware.pin_factory"
    if name == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        log.warning("%s = 'mock': the pins are simulated; no real switch, LED or button is used",
                    key)
        return MockFactory(pin_class=MockPWMPin)
    if name not in FACTORIES:
        raise ConfigError(f"config key {key} = {name!r} is not allowed; expected one of "
                          f"{', '.join(repr(f) for f in FACTORIES)}")
    order = ("lgpio", "rpigpio", "native") if name == "auto" else (name,)
    failures = []
    for candidate in order:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the native factory warns that it is a fallback
                return _open_factory(candidate)
        except Exception as exc:  # each library fails its own way on a machine without GPIO
            failures.append(f"{candidate}: {_short(exc)}")
    raise HardwareError(
        f"{key} = {name!r}: no GPIO library could open the GPIO chip ({'; '.join(failures)}); "
        "on a Raspberry Pi install lgpio (apt install python3-lgpio, see hardware/README.md); "
        "on a machine without GPIO set hardware.profile = 'no-gpio'"
    )


def _open_factory(name: str) -> Any:
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    from gpiozero.pins.native import NativeFactory

    return NativeFactory()


def hardware_error(key: str, value: str, exc: BaseException) -> HardwareError:
    """A gpiozero (or OS) failure, reworded to name the config key and what would be right."""
    from gpiozero import GPIOPinInUse, PinInvalidPin, PinPWMUnsupported

    where = f"{key} = {value!r}"
    if isinstance(exc, GPIOPinInUse) or "busy" in str(exc).lower():
        return HardwareError(f"{where}: the pin is already in use ({_short(exc)}); give this "
                             "part a free pin, or stop whatever else holds it")
    if isinstance(exc, PinInvalidPin):
        return HardwareError(f"{where}: not a valid pin on this board ({_short(exc)}); "
                             f"expected {PIN_HINT}")
    if isinstance(exc, PinPWMUnsupported):
        return HardwareError(f"{where}: this pin factory cannot do PWM on the pin; use "
                             "hardware.pin_factory = 'lgpio' or a plain LED")
    return HardwareError(f"{where}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return text or type(exc).__name__
