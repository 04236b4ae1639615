"""Topic names under ``<base>/<device id>/``, and how to reach a broker.

>>> t = DeviceTopics("edge", "3f9a1c0d5e7b2a41")
>>> t.cmd("label"), t.result("label")
('edge/3f9a1c0d5e7b2a41/cmd/label', 'edge/3f9a1c0d5e7b2a41/cmd/label/result')
>>> parse_topic("edge", "edge/3f9a1c0d5e7b2a41/event/activation")
('3f9a1c0d5e7b2a41', 'event/activation')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edge.config import MqttConfig, MqttUploadConfig
from edge.errors import UsageError

DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a device id may look like on the wire (ours are 16 hex digits)."""


@dataclass(frozen=True)
class DeviceTopics:
    base: str
    device_id: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def activation(self) -> str:
        return f"{self.root}/event/activation"

    @property
    def transcript(self) -> str:
        """A speech-to-text transcript (``assist.stt.publish_transcripts``)."""
        return f"{self.root}/event/transcript"

    @property
    def commands(self) -> str:
        """The subscription: one level only, so our own ``.../result`` never comes back."""
        return f"{self.root}/cmd/+"

    def cmd(self, name: str) -> str:
        return f"{self.root}/cmd/{name}"

    def result(self, name: str) -> str:
        return f"{self.root}/cmd/{name}/result"


def parse_topic(base: str, topic: str) -> tuple[str, str] | None:
    """``(device id, rest)`` for a topic under ``<base>/<device id>/``; None otherwise."""
    prefix = base + "/"
    if not topic.startswith(prefix):
        return None
    device, _, rest = topic[len(prefix):].partition("/")
    if not DEVICE_ID.fullmatch(device) or not rest:
        return None
    return device, rest


BROKER_OPTION = "--broker"
BROKER_OPTIONS = {"host": BROKER_OPTION, "port": BROKER_OPTION, "tls": BROKER_OPTION,
                  "ca": "--broker-ca", "username": "--broker-username",
                  "password_file": "--broker-password-file"}
"""The command-line options of `edge dashboard` and `edge simulate-fleet` that set each
broker setting (edge/commands/dashboard.py); no option sets a client certificate."""


@dataclass(frozen=True)
class BrokerSettings:
    """How to reach a broker; ``[mqtt]`` and ``--broker URL`` both become one of these."""

    host: str
    port: int = 1883
    tls: bool = False
    ca: str = ""
    cert: str = ""
    key: str = ""
    username: str = ""
    password_file: str = ""
    protocol: str = "5"
    keepalive_s: int = 60
    key_prefix: str = "mqtt"
    """Config key prefix named in errors (``mqtt``, ``upload.mqtt``), or ``--broker`` for
    settings from the command line (`edge dashboard`, `edge simulate-fleet`)."""

    def setting(self, name: str) -> str:
        """Where a person sets ``name`` (``host``, ``ca``, ``password_file``, ...): the config
        key ``mqtt.host``, or for a ``--broker`` URL the option that holds it ('' for none)."""
        if self.key_prefix == BROKER_OPTION:
            return BROKER_OPTIONS.get(name, "")
        return f"{self.key_prefix}.{name}"

    def settings_named(self, *names: str) -> str:
        """``mqtt.host and mqtt.port``; a URL's host and port are both ``--broker``."""
        keys = [k for k in dict.fromkeys(self.setting(n) for n in names) if k]
        return " and ".join(keys)

    @property
    def where(self) -> str:
        return f"MQTT broker {self.host}:{self.port}"

    @classmethod
    def from_config(cls, section: MqttConfig | MqttUploadConfig,
                    key_prefix: str = "mqtt") -> BrokerSettings:
        """The broker of a config section (``[mqtt]`` or ``[upload.mqtt]``, named in errors
        by ``key_prefix``)."""
        return cls(section.host, section.port, section.tls, section.ca, section.cert,
                   section.key, section.username, section.password_file, section.protocol,
                   key_prefix=key_prefix)


def broker_from_url(url: str, *, ca: str = "", username: str = "", password_file: str = "",
                    protocol: str = "5") -> BrokerSettings:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; credentials never in the URL."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UsageError(f"--broker {url!r} is not a broker URL; give mqtt://HOST[:PORT] or "
                         "mqtts://HOST[:PORT] (TLS)")
    if parts.username or parts.password:
        raise UsageError("--broker holds credentials; give --broker-username and "
                         "--broker-password-file instead (a URL ends up in logs and process "
                         "lists)")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise UsageError(f"--broker {url!r} has a bad port; give a number from 1 to "
                         "65535") from None
    host = unquote(parts.hostname)
    try:
        host.encode("idna")
    except UnicodeError:
        raise UsageError(f"--broker {url!r} has a host name that is not valid; give a DNS "
                         "name or an IP address") from None
    return BrokerSettings(host, port, tls, ca, "", "", username,
                          password_file, protocol, key_prefix=BROKER_OPTION)
