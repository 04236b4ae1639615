"""Rules on config values that subsystems apply again at run time, written once.

>>> is_loopback("127.0.0.1"), is_loopback("broker.lan")
(True, False)
>>> check_topic_levels("edge/#", "mqtt.base_topic")  # doctest: +ELLIPSIS
Traceback (most recent call last):
edge.errors.ConfigError: mqtt.base_topic = 'edge/#' is not allowed; use topic levels ...
"""

from __future__ import annotations

import ipaddress

from edge.errors import ConfigError

THRESHOLD_FLOOR = 0.1
"""The lowest wake threshold any setting may give (config, ``--threshold``, MQTT
``set_threshold``). Below it a model fires on ordinary speech and the device becomes a
continuous recorder; README.md ("The threshold floor") gives the score figures it rests on
(``bench/threshold_floor.py``)."""
FLOOR_WHY = (f"{THRESHOLD_FLOOR:g} is the threshold floor: lower makes the device record "
             "ordinary speech")


def threshold_refusal(value: float, where: str, hi: float = 1.0) -> str | None:
    """Why ``value`` cannot be a wake threshold set by ``where``, or None when it can.

    >>> threshold_refusal(0.05, "--threshold")  # doctest: +ELLIPSIS
    '--threshold 0.05 is too low; give 0.1 to 1 (0.1 is the threshold floor: lower ...)'
    """
    if THRESHOLD_FLOOR <= value <= hi:
        return None
    if value < THRESHOLD_FLOOR:
        return f"{where} {value} is too low; give {THRESHOLD_FLOOR:g} to {hi:g} ({FLOOR_WHY})"
    return f"{where} {value} is out of range; give {THRESHOLD_FLOOR:g} to {hi:g}"  # NaN too


def check_topic_levels(value: str, key: str, example: str = "edge") -> None:
    """Refuse a topic prefix a broker would misread: empty, a wildcard, a leading or trailing
    '/', or a NUL (MQTT forbids it in topic names)."""
    if not value or value.strip("/") != value or any(c in value for c in "#+\0"):
        raise ConfigError(f"{key} = {value!r} is not allowed; use topic levels without "
                          f"wildcards or leading/trailing '/', e.g. {example!r}")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: traffic that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


NAME_MAX = 40
"""The longest device name (``mqtt.name``), in characters: it fits a table cell."""


def name_refusal(value: str, where: str) -> str | None:
    """Why ``value`` cannot be a device's friendly name, or None when it can ('' is none).

    One rule for the config (``mqtt.name``) and for what the dashboard accepts in a state
    message: printable characters only, so no control, bidi-override or line-break
    character can reorder or break a line of the page or a log.

    >>> name_refusal("kitchen pi", "mqtt.name") is None
    True
    >>> name_refusal("a\\nb", "mqtt.name")  # doctest: +ELLIPSIS
    "mqtt.name = 'a\\\\nb' holds a control or invisible character; give ..."
    """
    if value == "":
        return None
    shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    fix = f"give 1 to {NAME_MAX} printable characters, e.g. 'kitchen pi', or '' for none"
    if len(value) > NAME_MAX:
        return f"{where} = {shown} is {len(value)} characters long; {fix}"
    if not value.isprintable():
        return f"{where} = {shown} holds a control or invisible character; {fix}"
    if value.strip() != value:
        return f"{where} = {shown} starts or ends with a space; {fix}"
    return None
