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
