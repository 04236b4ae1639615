"""What the device calls itself to an assistant: its name, and a MAC address that is not its own.

ESPHome clients key a device by the MAC address it reports. Reporting the Pi's real one
would hand out a stable hardware identifier; instead the address is derived from the
pseudonymous device id (edge.privacy.identity), so ``edge identity rotate`` changes it too.
It is a locally administered unicast address (second-lowest bit of the first octet set,
lowest clear), which no network card is sold with.

>>> local_mac("3f9a1c0d5e7b2a41")
'76:18:8C:AA:F4:08'
>>> check_name("kitchen-pi")
'kitchen-pi'
"""

from __future__ import annotations

import hashlib
import re

from edge.config import AssistConfig
from edge.errors import ConfigError

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,29}[a-z0-9])?")


def local_mac(device_id: str) -> str:
    """A locally administered unicast MAC address derived from ``device_id`` (stable for it)."""
    digest = bytearray(hashlib.sha256(b"edge-recorder assist mac\x00" + device_id.encode())
                       .digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02X}" for b in digest)


def check_name(name: str) -> str:
    """``name`` if it can be an ESPHome device name (it becomes a host name in discovery)."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"assist.name = {name!r:.60} is not allowed; expected 1 to 31 "
                          "lower-case letters, digits and '-', not starting or ending with "
                          "'-' (e.g. 'kitchen-pi')")
    return name


def check_assist(assist: AssistConfig) -> None:
    """What ``edge config check`` can tell of ``[assist]`` without opening anything."""
    if assist.mode != "off":
        check_name(assist.name)
