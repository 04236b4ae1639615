"""Where clips may go: checks on the ``[upload]`` config, and destinations named without secrets.

A destination string (``mqtts://broker:8883/edge-recorder/<id>/clip``,
``https://host:port``) is what the log and the ledger show: it never holds a
user name, password, token, URL path or query string.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge.errors import ConfigError, UploadError

if TYPE_CHECKING:
    from edge.config import MqttUploadConfig, UploadConfig


def check_upload_config(u: UploadConfig) -> None:
    """Cross-field checks that one key's range cannot express."""
    from edge.crypto import decode_key

    if u.retry_min_s > u.retry_max_s:
        raise ConfigError(f"upload.retry_min_s = {u.retry_min_s} is larger than upload.retry_max_s"
                          f" = {u.retry_max_s}; the first wait must not exceed the longest")
    if u.encrypt_to:
        try:
            decode_key(u.encrypt_to)
        except ValueError as exc:
            raise ConfigError(f"upload.encrypt_to is not a public key ({exc}); paste the public "
                              "key printed by `edge decrypt --new-key`") from None
    if u.mode == "mqtt" and not u.mqtt.host:
        raise ConfigError("upload.mode = 'mqtt' needs upload.mqtt.host, the broker's host name "
                          "or address")
    for section in ("mqtt", "https"):
        s = getattr(u, section)
        if s.key and not s.cert:
            raise ConfigError(f"upload.{section}.key is set but upload.{section}.cert is not; "
                              "give the client certificate too, or neither")
    if u.mqtt.topic_prefix.strip("/") != u.mqtt.topic_prefix or any(
            c in u.mqtt.topic_prefix for c in "#+") or not u.mqtt.topic_prefix:
        raise ConfigError(f"upload.mqtt.topic_prefix = {u.mqtt.topic_prefix!r} is not allowed; "
                          "use topic levels without wildcards or leading/trailing '/', e.g. "
                          "'edge-recorder'")
    if u.mode == "https" and not u.https.url:
        raise ConfigError("upload.mode = 'https' needs upload.https.url, e.g. "
                          "'https://collector.example/clips'")
    if u.https.url:
        check_https_url(u.https.url)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_https_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"upload.https.url = {url!r} is not an https:// URL with a host")
    if parts.username or parts.password:
        raise ConfigError("upload.https.url holds credentials; put the token in "
                          "upload.https.token_file instead (a URL ends up in logs)")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(f"upload.https.url = {url!r} is plain http to another machine; clips "
                          "may only leave the device over https://")


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


def reason(exc: BaseException) -> str:
    """The short human reason inside a network or file error."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def need_file(path: str, key: str) -> None:
    if path and not Path(path).is_file():
        raise UploadError(f"{key} = {path!r}: no such file; give the path of a PEM file")


def read_secret(path: str, key: str) -> str:
    """A password or token from a file: its first line. Read at each use, so fixing the file
    needs no restart; the value is never logged."""
    if not path:
        return ""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UploadError(f"cannot read {key} ({path}: {reason(exc)}); make it readable by the "
                          "recorder, mode 0600") from None
    return text.splitlines()[0].strip() if text.strip() else ""
