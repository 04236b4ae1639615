"""The zeroconf advertisement that lets Home Assistant find the device by itself.

ESPHome devices announce ``<name>._esphomelib._tcp.local.`` over mDNS with a few TXT
properties; HA's esphome integration offers to add the device it discovers, asking for the
key (``api_encryption`` says one is needed). A Wyoming satellite announces
``<name>._wyoming._tcp.local.``, with no properties. We announce on the addresses the server
listens on (for ESPHome, with the derived MAC address of ``edge.assist.naming``, never the
Pi's own). A failure to announce is logged; the server still serves clients that are given
the address.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def addresses(host: str) -> list[str]:
    """The IPv4 addresses to announce: ``host``, or each non-loopback one for '0.0.0.0'."""
    if host not in ("", "0.0.0.0"):
        return [host]
    import ifaddr

    found = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
             if isinstance(ip.ip, str) and not ip.ip.startswith("127.")]
    return found or ["127.0.0.1"]


class Advertisement:
    """``<name>.<service>`` on mDNS while the server listens (loop thread)."""

    def __init__(self, service: str, name: str, host: str, port: int,
                 properties: Mapping[str, str] | None = None) -> None:
        self.service = service
        """The service type, as '_esphomelib._tcp.local.'."""
        self.name = name
        self.host = host
        self.port = port
        self.properties = dict(properties or {})
        """The TXT properties."""
        self._zc: Any = None
        self._info: Any = None
        self._broadcast: Any = None

    @property
    def service_name(self) -> str:
        return f"{self.name}.{self.service}"

    async def start(self) -> None:
        from zeroconf import IPVersion, ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        addrs: list[str] = []
        try:
            addrs = addresses(self.host)  # (netlink, which a sandbox may forbid)
            self._zc = AsyncZeroconf(interfaces=addrs, ip_version=IPVersion.V4Only)
            self._info = ServiceInfo(
                self.service, self.service_name, port=self.port, server=f"{self.name}.local.",
                addresses=[socket.inet_aton(a) for a in addrs], properties=self.properties or None)
            # it returns once the name is claimed; the announcements go on in a task
            self._broadcast = await self._zc.async_register_service(self._info)
        except Exception as exc:  # zeroconf raises several kinds (a name in use, no network)
            log.warning("could not announce %s on mDNS (%s); Home Assistant can still add "
                        "it by its address", self.service_name, exc)
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
