"""One long-lived paho-mqtt 2.x connection (callback API version 2): LWT, TLS, credentials.

paho's callbacks run on its network thread; here they only record the connection
state and hand each message to ``on_message``, which must not block (the device
plugin and the dashboard put it on a queue). paho reconnects by itself, backing off
from 1 s to 60 s, and every subscription is renewed on each connect.

QoS 1 publishes made while disconnected wait in paho's memory, bounded at
``MAX_QUEUED`` messages (paho's own default is unbounded).

>>> conn = MqttConnection(BrokerSettings("localhost"), "dev-1",
...                       will=Will("edge/dev-1/status", "offline"))     # doctest: +SKIP
>>> conn.subscribe("edge/dev-1/cmd/+"); conn.start()                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.errors import ConfigError
from edge.mqtt.topics import BrokerSettings
from edge.privacy.secrets import need_file, read_secret

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MAX_QUEUED = 1000


@dataclass(frozen=True)
class Will:
    """The last-will message the broker publishes if the connection dies uncleanly."""

    topic: str
    payload: str
    qos: int = 1
    retain: bool = True


def new_client(s: BrokerSettings, client_id: str, will: Will | None = None) -> Any:
    """A configured but unconnected paho client (also used by the fleet simulator)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = s.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else True)
    client.max_queued_messages_set(MAX_QUEUED)
    client.reconnect_delay_set(1, 60)
    if s.tls:
        for name, path in (("ca", s.ca), ("cert", s.cert), ("key", s.key)):
            need_file(path, s.setting(name))
        try:
            client.tls_set(ca_certs=s.ca or None, certfile=s.cert or None,
                           keyfile=s.key or None, cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the TLS files {s.settings_named('ca', 'cert', 'key')} "
                              f"({exc}); give PEM files the recorder can read") from None
    if s.username:
        client.username_pw_set(s.username, read_secret(s.password_file,
                                                       s.setting("password_file")))
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client


def subscribe_options(protocol: str, qos: int = 1) -> dict[str, Any]:
    """Keyword arguments for ``subscribe``: under MQTT 5, ask the broker to keep the retain
    flag on live messages too, so a retained command is recognisable as one."""
    if protocol != "5":
        return {"qos": qos}
    from paho.mqtt.subscribeoptions import SubscribeOptions

    return {"options": SubscribeOptions(qos=qos, retainAsPublished=True)}


class MqttConnection:
    """A paho client kept connected in the background, with subscriptions renewed."""

    def __init__(self, settings: BrokerSettings, client_id: str, *, will: Will | None = None,
                 on_message: Callable[[Any], None] | None = None,
                 on_connect: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.client_id = client_id
        self.will = will
        self.on_message = on_message
        self.on_connect = on_connect
        self.connected = threading.Event()
        self.connects = 0
        self._subscriptions: list[str] = []
        self._pending_subacks: set[int] = set()
        self._client: Any = None
        self._last_error = ""
        self._stopping = False

    def subscribe(self, topic: str) -> None:
        """Subscribe now (if connected) and after every reconnect."""
        self._subscriptions.append(topic)
        if self._client is not None and self.connected.is_set():
            self._client.subscribe(topic, **subscribe_options(self.settings.protocol))

    def start(self) -> None:
        """Connect in the background; never blocks on the network."""
        client = new_client(self.settings, self.client_id, self.will)
        client.on_connect = self._connected
        client.on_connect_fail = self._connect_failed
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_subscribe = self._subscribed
        self._client = client
        client.connect_async(self.settings.host, self.settings.port,
                             keepalive=self.settings.keepalive_s)
        client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: str | bytes, qos: int = 0,
                retain: bool = False) -> Any:
        if self._client is None:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (0, 4):  # 4: not connected (QoS 1 stays queued, QoS 0 is dropped)
            log.warning("publishing to %s failed (paho error %s)", topic, info.rc)
        return info

    def stop(self, final: Sequence[tuple[str, str, int, bool]] = (), timeout: float = 2.0) -> None:
        """Publish ``final`` (topic, payload, qos, retain) if connected, then disconnect."""
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping = True
        if self.connected.is_set():
            infos = [client.publish(t, p, qos=q, retain=r) for t, p, q, r in final]
            for info in infos:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    break
        client.disconnect()
        client.loop_stop()
        self.connected.clear()

    # ---- paho's network thread ----------------------------------------------

    def _connected(self, client: Client, _u: object, _flags: ConnectFlags, reason: ReasonCode,
                   _props: Properties | None) -> None:
        if reason.is_failure:
            msg = f"{self.settings.where} refused the connection ({reason})"
            if msg != self._last_error:
                log.error("%s; check %s", msg,
                          self.settings.settings_named("username", "password_file"))
                self._last_error = msg
            return
        self.connects += 1
        self._last_error = ""
        log.info("connected to %s", self.settings.where)
        # Ready only once the broker has acknowledged every subscription: a command sent
        # the moment this connection says it is up must not be lost.
        self._pending_subacks = set()
        for topic in self._subscriptions:
            _rc, mid = client.subscribe(topic, **subscribe_options(self.settings.protocol))
            if mid is not None:
                self._pending_subacks.add(mid)
        if not self._pending_subacks:
            self._ready()

    def _subscribed(self, _c: Client, _u: object, mid: int, _codes: object,
                    _props: Properties | None) -> None:
        self._pending_subacks.discard(mid)
        if not self._pending_subacks and not self.connected.is_set():
            self._ready()

    def _ready(self) -> None:
        self.connected.set()
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception:
                log.exception("MQTT on-connect handler failed")

    def _connect_failed(self, _c: Client, _u: object) -> None:
        msg = f"cannot reach {self.settings.where}"
        if msg != self._last_error:
            log.warning("%s; retrying in the background (check %s, and that the broker "
                        "runs)", msg, self.settings.settings_named("host", "port"))
            self._last_error = msg

    def _disconnected(self, _c: Client, _u: object, _flags: DisconnectFlags, reason: ReasonCode,
                      _props: Properties | None) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("disconnected from %s (%s); reconnecting", self.settings.where, reason)
        self.connected.clear()

    def _message(self, _c: Client, _u: object, msg: MQTTMessage) -> None:
        if self.on_message is not None:
            try:
                self.on_message(msg)
            except Exception:
                log.exception("MQTT message handler failed on %s", msg.topic)
