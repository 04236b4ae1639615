"""Publishing clips to an MQTT broker: paho-mqtt 2.x, callback API version 2, QoS 1.

Topic: ``<upload.mqtt.topic_prefix>/<device id>/clip``. The payload is the clip
(WAV, or a sealed clip). Its metadata rides along:

* MQTT 5: the Content Type property and one user property per metadata key
  (values as strings; ``id`` is the clip's UUID).
* MQTT 3.1.1 (no properties): an envelope, one line of JSON metadata, a newline,
  then the payload (``edge.privacy.bundle``).

``send`` returns only after the broker's PUBACK with a success reason code. Any
failure drops the client, so paho never keeps a second, in-memory copy of the
queue: the outbox is the only queue, and the next attempt starts afresh.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.config import MqttUploadConfig
from edge.errors import EdgeError, UploadError
from edge.mqtt.client import new_client
from edge.mqtt.topics import BrokerSettings
from edge.privacy.bundle import pack
from edge.privacy.secrets import reason as why_failed
from edge.upload.destinations import mqtt_destination, mqtt_topic, wire_metadata
from edge.upload.queue import Entry

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


class MqttSender:
    def __init__(self, cfg: MqttUploadConfig, device_id: str) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.topic = mqtt_topic(cfg, device_id)
        self.destination = mqtt_destination(cfg, device_id)
        self._where = f"MQTT broker {cfg.host}:{cfg.port}"
        self._client: Any = None
        self._cond = threading.Condition()
        self._connack: Any = None
        self._connected = False
        self._acks: dict[int, Any] = {}

    # -- paho callbacks (network thread): record and notify, nothing else -----------------

    def _on_connect(self, _c: Client, _u: object, _flags: ConnectFlags, reason: ReasonCode,
                    _props: Properties | None) -> None:
        with self._cond:
            self._connack = reason
            self._connected = not reason.is_failure
            self._cond.notify_all()

    def _on_disconnect(self, _c: Client, _u: object, _flags: DisconnectFlags, _reason: ReasonCode,
                       _props: Properties | None) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_publish(self, _c: Client, _u: object, mid: int, reason: ReasonCode,
                    _props: Properties | None) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    # -- connection -----------------------------------------------------------------------

    def _connect(self) -> None:
        cfg = self.cfg
        try:
            client = new_client(BrokerSettings.from_config(cfg, "upload.mqtt"),
                                f"{self.device_id}-upload")
        except EdgeError as exc:
            # a missing or unreadable file: the owner can fix it without a restart
            raise UploadError(str(exc)) from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_timeout = cfg.timeout_s
        with self._cond:
            self._connack = None
            self._connected = False
            self._acks.clear()
        try:
            client.connect(cfg.host, cfg.port, keepalive=60)
        except ssl.SSLCertVerificationError as exc:
            raise UploadError(
                f"TLS certificate check failed for {self._where} ({exc.verify_message}); set "
                "upload.mqtt.ca to the CA certificate that signed the broker's") from None
        except ssl.SSLError as exc:
            raise UploadError(f"TLS handshake with {self._where} failed ({exc.reason}); check "
                              "upload.mqtt.tls, port, ca, cert and key") from None
        except (OSError, ValueError) as exc:
            raise UploadError(f"cannot reach {self._where} ({why_failed(exc)}); check "
                              "upload.mqtt.host and port, and that the broker is running") from None
        self._client = client
        client.loop_start()
        with self._cond:
            self._wait(lambda: self._connack is not None)
            reason = self._connack
        if reason is None:
            self._drop()
            raise UploadError(f"{self._where} accepted the connection but sent no CONNACK within "
                              f"{cfg.timeout_s:g} s; check that upload.mqtt.port is an MQTT port "
                              "and upload.mqtt.tls matches it")
        if reason.is_failure:
            self._drop()
            raise UploadError(f"{self._where} refused the connection ({reason}); check "
                              "upload.mqtt.username and upload.mqtt.password_file")

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    # -- sending --------------------------------------------------------------------------

    def send(self, entry: Entry, payload: bytes) -> None:
        if self._client is None or not self._connected:
            self._drop()
            self._connect()
        meta = wire_metadata(entry.meta, self.device_id, entry.sha256, entry.content_type)
        props = None
        if self.cfg.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = entry.content_type
            props.UserProperty = [(str(k), _text(v)) for k, v in sorted(meta.items())]
        else:
            payload = pack(meta, payload)
        info = self._client.publish(self.topic, payload, qos=1, properties=props)
        if info.rc != 0:
            self._drop()
            raise UploadError(f"publishing to {self._where} failed (paho error {info.rc}); "
                              "the connection is set up again at the next try")
        self._wait_for_puback(info.mid)

    def _wait(self, done: Callable[[], bool]) -> None:
        """Wait (holding ``_cond``) until ``done()`` or ``timeout_s``, woken by the callbacks."""
        deadline = time.monotonic() + self.cfg.timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _wait_for_puback(self, mid: int) -> None:
        with self._cond:
            self._wait(lambda: mid in self._acks or not self._connected)
            reason = self._acks.pop(mid, None)
        if reason is None:
            self._drop()
            raise UploadError(f"{self._where} did not acknowledge (PUBACK) the clip within "
                              f"{self.cfg.timeout_s:g} s or the connection dropped; it stays "
                              "queued")
        if reason.is_failure:
            raise UploadError(f"{self._where} refused the clip ({reason}); check the broker's "
                              f"ACL lets this client publish to {self.topic}")

    def close(self) -> None:
        self._drop()


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
