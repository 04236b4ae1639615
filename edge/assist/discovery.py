"""The zeroconf advertisement that lets Home Assistant find the device by itself.

ESPHome devices announce ``<name>._esphomelib._tcp.local.`` over mDNS with a few TXT
properties; HA's esphome integration offers to add the device it discovers, asking for the
key (``api_encryption`` says one is needed). We announce the same, on the addresses the API
listens on, with the derived MAC address (``edge.assist.naming``), never the Pi's own. A
failure to announce is logged; the API still serves clients that are given the address.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from edge import __version__
from edge.assist.framing import NOISE_PROTOCOL

log = logging.getLogger(__name__)

SERVICE = "_esphomelib._tcp.local."


def addresses(host: str) -> list[str]:
    """The IPv4 addresses to announce: ``host``, or each non-loopback one for '0.0.0.0'."""
    if host not in ("", "0.0.0.0"):
        return [host]
    import ifaddr

    found = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
             if isinstance(ip.ip, str) and not ip.ip.startswith("127.")]
    return found or ["127.0.0.1"]


class Advertisement:
    """``<name>._esphomelib._tcp.local.`` on mDNS while the API listens (loop thread)."""

    def __init__(self, name: str, mac: str, host: str, port: int, esphome_version: str) -> None:
        self.name = name
        self.mac = mac
        self.host = host
        self.port = port
        self.esphome_version = esphome_version
        self._zc: Any = None
        self._info: Any = None
        self._broadcast: Any = None

    @property
    def service_name(self) -> str:
        return f"{self.name}.{SERVICE}"

    async def start(self) -> None:
        from zeroconf import IPVersion, ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        addrs: list[str] = []
        try:
            addrs = addresses(self.host)  # (netlink, which a sandbox may forbid)
            self._zc = AsyncZeroconf(interfaces=addrs, ip_version=IPVersion.V4Only)
            self._info = ServiceInfo(
                SERVICE, self.service_name, port=self.port, server=f"{self.name}.local.",
                addresses=[socket.inet_aton(a) for a in addrs],
                properties={"version": self.esphome_version, "mac": self.mac.replace(":", "")
                            .lower(), "platform": "host", "board": "edge-recorder",
                            "network": "ethernet", "api_encryption": NOISE_PROTOCOL.decode(),
                            "friendly_name": self.name,
                            "project_name": "edge-recorder.satellite",
                            "project_version": __version__})
            # it returns once the name is claimed; the announcements go on in a task
            self._broadcast = await self._zc.async_register_service(self._info)
        except Exception as exc:  # zeroconf raises several kinds (a name in use, no network)
            log.warning("could not announce %s on mDNS (%s); Home Assistant can still add "
                        "the device by its address", self.service_name, exc)
            await self.close()
            return
        log.info("announced %s on mDNS at %s", self.service_name, ", ".join(addrs))

    async def close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            if self._broadcast is not None:
                await self._broadcast
            if self._info is not None:
                await (await zc.async_unregister_service(self._info))
        except Exception as exc:
            log.debug("mDNS goodbye failed: %s", exc)
        finally:
            await zc.async_close()
