"""The doctor's broker check: connect once to each configured MQTT broker (the upload
broker and the ``[mqtt]`` one) with the configured TLS, wait for CONNACK, disconnect.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from edge.config import Config
from edge.errors import EdgeError
from edge.service.findings import Finding, fail, ok, warn

if TYPE_CHECKING:
    from paho.mqtt.client import Client
    from paho.mqtt.reasoncodes import ReasonCode

    from edge.mqtt.topics import BrokerSettings


def check_broker(cfg: Config) -> Iterator[Finding]:
    """One finding per configured broker; ok when none is configured."""
    from edge.mqtt.topics import BrokerSettings

    brokers = []
    if cfg.upload.mode == "mqtt":
        u = cfg.upload.mqtt
        brokers.append((BrokerSettings.from_config(u, "upload.mqtt"), min(u.timeout_s, 10.0)))
    if cfg.mqtt.enabled:
        brokers.append((BrokerSettings.from_config(cfg.mqtt), 10.0))
    if not brokers:
        yield ok("broker", "no broker configured (upload.mode is not 'mqtt' and mqtt is not "
                           "enabled)")
        return
    for settings, timeout in brokers:
        yield probe_broker(settings, timeout)


def probe_broker(s: BrokerSettings, timeout: float) -> Finding:
    """Connect to the broker once (TLS as configured), wait for CONNACK, disconnect."""
    from edge.config.rules import is_loopback
    from edge.mqtt.client import new_client
    from edge.privacy.secrets import reason

    where = f"{'mqtts' if s.tls else 'mqtt'}://{s.host}:{s.port} ({s.key_prefix})"
    try:
        client = new_client(s, f"edge-doctor-{os.getpid()}")
    except EdgeError as exc:
        return fail("broker", f"{where}: {exc}", f"fix {s.key_prefix}.ca, .cert, .key and "
                    ".password_file")
    done = threading.Event()
    result: dict[str, ReasonCode] = {}

    def on_connect(_c: Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout
    try:
        client.connect(s.host, s.port, keepalive=30)
    except ssl.SSLCertVerificationError as exc:
        return fail("broker", f"{where}: the broker's TLS certificate is not trusted "
                              f"({exc.verify_message})",
                    f"set {s.key_prefix}.ca to the CA certificate (PEM) that signed the broker's "
                    "certificate, and check the host name matches it")
    except (ssl.SSLError, ConnectionResetError) as exc:
        if not isinstance(exc, ssl.SSLError) and not s.tls:
            return fail("broker", f"{where}: the broker closed the connection ({reason(exc)})",
                        f"check {s.key_prefix}.tls matches the port (8883 is TLS, 1883 plain)")
        why = getattr(exc, "reason", None) or reason(exc)
        return fail("broker", f"{where}: TLS handshake failed ({why})",
                    f"check {s.key_prefix}.tls matches the port (8883 is TLS, 1883 plain), "
                    "and the client certificate if the broker asks for one")
    except (OSError, ValueError) as exc:
        return fail("broker", f"{where}: cannot connect ({reason(exc)})",
                    f"check {s.key_prefix}.host and .port, that the broker runs, and that no "
                    "firewall blocks it")
    client.loop_start()
    try:
        if not done.wait(timeout):
            return fail("broker", f"{where}: connected, but no MQTT answer (CONNACK) within "
                                  f"{timeout:g} s",
                        f"check {s.key_prefix}.port is an MQTT port and {s.key_prefix}.tls "
                        "matches it")
        rc = result["rc"]
        if rc.is_failure:
            return fail("broker", f"{where}: the broker refused the connection ({rc})",
                        f"check {s.key_prefix}.username and {s.key_prefix}.password_file, and "
                        "the broker's ACL")
        tls = ""
        sock = client.socket()
        if isinstance(sock, ssl.SSLSocket):
            tls = f", {sock.version()}, certificate verified"
        if not s.tls and not is_loopback(s.host):
            return warn("broker", f"{where}: connected WITHOUT TLS: metadata (and clips, for "
                                  "upload) cross the network unencrypted",
                        f"set {s.key_prefix}.tls = true and port 8883 on a TLS listener")
        return ok("broker", f"{where}: connected{tls}, MQTT {s.protocol}")
    finally:
        client.disconnect()
        client.loop_stop()
