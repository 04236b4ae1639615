"""Where clips go, named without secrets, and what a destination is told about a clip.

A destination string (``mqtts://broker:8883/edge-recorder/<id>/clip``,
``https://host:port``) is what the log and the ledger show: it never holds a
user name, password, token, URL path or query string.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from edge.config import MqttUploadConfig


def https_destination(url: str) -> str:
    """``scheme://host[:port]``: no path or query, which may hold a webhook's secret."""
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{host}{port}"


def mqtt_topic(cfg: MqttUploadConfig, device_id: str) -> str:
    return f"{cfg.topic_prefix}/{device_id}/clip"


def mqtt_destination(cfg: MqttUploadConfig, device_id: str) -> str:
    scheme = "mqtts" if cfg.tls else "mqtt"
    return f"{scheme}://{cfg.host}:{cfg.port}/{mqtt_topic(cfg, device_id)}"


def wire_metadata(meta: dict[str, Any], device_id: str, sha256: str,
                  content_type: str) -> dict[str, Any]:
    """What a destination is told about a clip: its metadata, the pseudonymous device id, the
    payload's sha256 and type. The clip ``id`` is the receiver's de-duplication key."""
    return {**meta, "device": device_id, "sha256": sha256, "content_type": content_type}
