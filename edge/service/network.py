"""Whether the service needs the network, and the IP deny that install.sh gives it when not.

With uploads off and MQTT off (or only to this machine) nothing may leave the device, so
install.sh adds the drop-in ``systemd/no-network.conf`` (``IPAddressDeny=any``,
``IPAddressAllow=localhost``): even a bug cannot send a packet beyond loopback. It is
decided when install.sh runs; the drop-in also sets ``EDGE_IP_DENIED=1``, so a config
edited later to reach another machine is refused by ``edge run`` in one line that says to
run install.sh again, instead of failing to connect for ever.

>>> from edge.config import Config
>>> remote_hosts(Config())
[]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from edge.config import Config
from edge.config.rules import is_loopback
from edge.errors import ConfigError

DROP_IN = "/etc/systemd/system/edge-recorder.service.d/no-network.conf"
DENIED_ENV = "EDGE_IP_DENIED"
"""Set to 1 by the drop-in: this process cannot reach any address but loopback."""


def url_host(url: str) -> str:
    """The host a URL names; '' for none or a URL that does not parse."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def remote_hosts(cfg: Config) -> list[tuple[str, str]]:
    """(config key, host) of each machine other than this one that the service reaches."""
    reached: list[tuple[str, str]] = []
    if cfg.upload.mode == "mqtt":
        reached.append(("upload.mqtt.host", cfg.upload.mqtt.host))
    elif cfg.upload.mode == "https":
        reached.append(("upload.https.url", url_host(cfg.upload.https.url)))
    if cfg.mqtt.enabled:
        reached.append(("mqtt.host", cfg.mqtt.host))
    listens = cfg.assist.listens_on
    if listens is not None:  # Home Assistant connects in, and the audio goes back to it
        reached.append(("assist.wyoming.host" if cfg.assist.mode == "wyoming"
                        else "assist.host", listens[0]))
    elif cfg.assist.mode == "stt":
        reached.append(("assist.stt.url", url_host(cfg.assist.stt.url)))
    return [(key, host) for key, host in reached if not is_loopback(host)]


def check_network_allowed(cfg: Config, environ: Mapping[str, str] = os.environ) -> None:
    """Under the drop-in, refuse a config that reaches another machine (it could not)."""
    if environ.get(DENIED_ENV) != "1":
        return
    remote = remote_hosts(cfg)
    if remote:
        key, host = remote[0]
        what = ("listens for other machines" if key in ("assist.host", "assist.wyoming.host")
                else "is another machine")
        raise ConfigError(
            f"{key} = {host!r} {what}, but this service may reach loopback only "
            f"(install.sh wrote {DROP_IN} while nothing left the device): run install.sh "
            "again, which removes it for this config")
