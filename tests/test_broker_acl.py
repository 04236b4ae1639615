"""The shipped broker configuration (deploy/mosquitto/) enforces what SECURITY.md claims.

Mosquitto runs the repository's own mosquitto.conf and acl, with files made by the
repository's own make-broker-files.sh; only the paths, the port (a free loopback one)
and the log destination are rewritten for the test.

* a client without credentials (or with a wrong password, or without TLS) gets nothing;
* one device can neither command nor impersonate another, nor read its commands;
* the dashboard reads every device and can send only label commands; it reads no clip.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge.config import MqttUploadConfig
from edge.upload.queue import Entry
from edge.upload.senders.mqtt import MqttSender
from tests.fixtures.mqtt import Broker, free_port
from tests.waiting import wait_for

DEPLOY = Path(__file__).parent.parent / "deploy" / "mosquitto"
DEV_A = "0123456789abcdef"
DEV_B = "fedcba9876543210"
QUIET_S = 0.5
"""How long a denied message is given to (wrongly) arrive, after a later allowed one did."""


@dataclass
class Shipped:
    broker: Broker
    files: Path

    def password(self, user: str) -> str:
        return (self.files / "secrets" / f"{user}.password").read_text().strip()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Any:
    files = tmp_path_factory.mktemp("broker-files")
    files.chmod(0o755)
    subprocess.run(["bash", str(DEPLOY / "make-broker-files.sh"), str(files), "127.0.0.1",
                    DEV_A, DEV_B], check=True, capture_output=True)
    port = free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 8883" in conf
    conf = (conf.replace("/etc/mosquitto/edge/", f"{files}/")
            .replace("listener 8883", f"listener {port} 127.0.0.1")
            .replace("/var/lib/mosquitto/", f"{files}/")
            .replace("log_dest syslog", "log_dest stdout"))
    if os.geteuid() == 0:  # as root, mosquitto would drop to a user who cannot read tmp
        conf += f"user {getpass.getuser()}\n"
    (files / "mosquitto.conf").write_text(conf)
    broker = Broker(files, port).start()
    yield Shipped(broker, files)
    broker.stop()


@dataclass
class Client:
    """A paho client (MQTT 5) that records what it receives and every acknowledgement."""

    shipped: Shipped
    user: str | None
    password: str | None = None
    tls: bool = True
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.connack: Any = None
        self.acks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        if self.tls:
            c.tls_set(ca_certs=str(self.shipped.files / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
        if self.user is not None:
            pw = self.password if self.password is not None else self.shipped.password(self.user)
            c.username_pw_set(self.user, pw)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = lambda *a: self._note()
        self.client = c

    def _note(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self.cond:
            self.connack = reason
            self.cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.cond:
            self.acks[mid] = reason
            self.cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        with self.cond:
            self.subacks[mid] = list(reasons)
            self.cond.notify_all()

    def _wait(self, done: Any, what: str, timeout: float = 10.0) -> bool:
        return bool(wait_for(done, timeout, what, notified=self.cond))

    def connect(self) -> Any:
        """Connect and return the CONNACK reason (None: the connection itself failed)."""
        b = self.shipped.broker
        try:
            self.client.connect(b.host, b.port)
        except (ssl.SSLError, OSError):
            return None
        self.client.loop_start()
        with contextlib.suppress(AssertionError):  # refused at TLS: no CONNACK ever comes
            self._wait(lambda: self.connack is not None or not self.client.is_connected()
                       and self.connack is not None, "a CONNACK", 5.0)
        return self.connack

    def subscribe(self, topic: str) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert self._wait(lambda: mid in self.subacks, f"a SUBACK for {topic}")
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes = b"{}") -> Any:
        """Publish at QoS 1 and return the broker's PUBACK reason."""
        info = self.client.publish(topic, payload, qos=1)
        assert self._wait(lambda: info.mid in self.acks, f"a PUBACK for {topic}")
        return self.acks[info.mid]

    def wait_for(self, topic: str, timeout: float = 10.0) -> bool:
        return self._wait(lambda: any(t == topic for t, _ in self.messages),
                          f"a message on {topic}", timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def client(shipped: Shipped) -> Any:
    made: list[Client] = []

    def make(user: str | None, password: str | None = None, tls: bool = True,
             subscribe: tuple[str, ...] = ()) -> Client:
        c = Client(shipped, user, password, tls)
        made.append(c)
        reason = c.connect()
        if user is not None and password is None and tls:
            assert reason is not None and not reason.is_failure, f"{user} could not connect"
            for topic in subscribe:
                assert not any(r.is_failure for r in c.subscribe(topic)), topic
        return c

    yield make
    for c in made:
        c.close()


def test_a_client_without_credentials_cannot_connect_so_cannot_command(client):
    anonymous = client(None)
    assert anonymous.connack is not None and anonymous.connack.is_failure
    assert str(anonymous.connack) == "Not authorized"
    wrong = client(DEV_B, password="guessed")
    assert wrong.connack is not None and wrong.connack.is_failure
    plain = client(DEV_A, tls=False)  # the right password, but not over TLS
    assert plain.connack is None or plain.connack.is_failure
    # the device, listening on its command topic, received nothing from any of them
    device = client(DEV_A, subscribe=(f"edge/{DEV_A}/cmd/+",))
    dashboard = client("dashboard")
    assert not dashboard.publish(f"edge/{DEV_A}/cmd/label").is_failure
    assert device.wait_for(f"edge/{DEV_A}/cmd/label")
    assert [t for t, _ in device.messages] == [f"edge/{DEV_A}/cmd/label"]


def test_one_device_cannot_command_or_impersonate_another(client):
    a = client(DEV_A, subscribe=(f"edge/{DEV_A}/cmd/+",))
    watcher = client("dashboard", subscribe=("edge/+/status", "edge/+/event/#"))
    receiver = client("receiver", subscribe=("edge-recorder/+/clip",))
    b = client(DEV_B)
    for name in ("mute", "purge", "label", "set_threshold"):
        assert b.publish(f"edge/{DEV_A}/cmd/{name}", b'{"on": false}').is_failure
    # nor speak for A: its status, its events, its clips
    assert b.publish(f"edge/{DEV_A}/status", b"offline").is_failure
    assert b.publish(f"edge/{DEV_A}/event/activation").is_failure
    assert b.publish(f"edge-recorder/{DEV_A}/clip", b"RIFF").is_failure
    # nor read A's commands (mosquitto grants the subscription but delivers nothing)
    b.subscribe(f"edge/{DEV_A}/cmd/+")
    b.subscribe("edge/#")
    b.subscribe("#")
    dashboard = client("dashboard")
    assert not dashboard.publish(f"edge/{DEV_A}/cmd/label").is_failure
    assert a.wait_for(f"edge/{DEV_A}/cmd/label")
    # B's own topics work, so the refusals above are the ACL and not a broken session
    assert not b.publish(f"edge/{DEV_B}/status", b"online").is_failure
    assert not b.publish(f"edge-recorder/{DEV_B}/clip", b"RIFF").is_failure
    assert watcher.wait_for(f"edge/{DEV_B}/status")
    assert receiver.wait_for(f"edge-recorder/{DEV_B}/clip")
    time.sleep(QUIET_S)
    assert [t for t, _ in a.messages] == [f"edge/{DEV_A}/cmd/label"]
    assert b.messages == []
    assert [t for t, _ in watcher.messages] == [f"edge/{DEV_B}/status"]
    assert [t for t, _ in receiver.messages] == [f"edge-recorder/{DEV_B}/clip"]


def test_the_dashboard_reads_every_device_and_sends_only_labels(client):
    a = client(DEV_A, subscribe=(f"edge/{DEV_A}/cmd/+",))
    b = client(DEV_B, subscribe=(f"edge/{DEV_B}/cmd/+",))
    dash = client("dashboard", subscribe=("edge/+/status", "edge/+/state", "edge/+/event/#",
                                          "edge/+/cmd/+/result"))
    for dev in (a, b):
        did = DEV_A if dev is a else DEV_B
        assert not dev.publish(f"edge/{did}/state", b'{"state": "listening"}').is_failure
        assert not dev.publish(f"edge/{did}/event/activation").is_failure
        assert not dev.publish(f"edge/{did}/cmd/label/result").is_failure
        assert dash.wait_for(f"edge/{did}/cmd/label/result")
    for name in ("mute", "purge", "set_threshold", "stats"):
        assert dash.publish(f"edge/{DEV_A}/cmd/{name}").is_failure
    assert dash.publish(f"edge/{DEV_A}/status", b"offline").is_failure
    assert not dash.publish(f"edge/{DEV_A}/cmd/label", b'{"id": "last"}').is_failure
    assert not dash.publish(f"edge/{DEV_B}/cmd/label", b'{"id": "last"}').is_failure
    assert a.wait_for(f"edge/{DEV_A}/cmd/label") and b.wait_for(f"edge/{DEV_B}/cmd/label")
    # the dashboard reads no clip, ever
    dash.subscribe("edge-recorder/+/clip")
    assert not a.publish(f"edge-recorder/{DEV_A}/clip", b"RIFF").is_failure
    time.sleep(QUIET_S)
    assert [t for t, _ in a.messages] == [f"edge/{DEV_A}/cmd/label"]
    assert not any(t.startswith("edge-recorder/") for t, _ in dash.messages)


def test_the_recorder_uploads_through_the_shipped_broker_as_itself(shipped, client, tmp_path):
    """The real MqttSender, configured as SECURITY.md says, is let through by the ACL."""
    receiver = client("receiver", subscribe=("edge-recorder/+/clip",))
    pw = tmp_path / "pw"
    pw.write_text(shipped.password(DEV_A) + "\n")
    cfg = MqttUploadConfig(host="127.0.0.1", port=shipped.broker.port, tls=True,
                           ca=str(shipped.files / "ca.crt"), username=DEV_A,
                           password_file=str(pw))
    sender = MqttSender(cfg, DEV_A)
    entry = Entry("c1", 0.0, 4, 4, "0" * 64, "audio/wav", {"id": "c1"}, 0, 0.0)
    try:
        sender.send(entry, b"RIFF")
    finally:
        sender.close()
    assert receiver.wait_for(f"edge-recorder/{DEV_A}/clip")
    # with B's identity but A's topic the same sender is refused, with the fix named
    spoof = MqttSender(MqttUploadConfig(**{**cfg.__dict__, "username": DEV_B,
                                           "password_file": str(_pw(tmp_path, shipped, DEV_B))}),
                       DEV_A)
    from edge.errors import UploadError

    try:
        with pytest.raises(UploadError, match="ACL"):
            spoof.send(entry, b"RIFF")
    finally:
        spoof.close()


def _pw(tmp_path: Path, shipped: Shipped, user: str) -> Path:
    p = tmp_path / f"{user}.pw"
    p.write_text(shipped.password(user))
    return p


# ---- each account has exactly its topics: every forbidden publication, one test each ----
# Mosquitto applies a `pattern` rule to every account, so the service accounts must not be
# covered by the device rules: "dashboard" and "receiver" are valid device ids in a topic.
FORBIDDEN = [
    # the dashboard may send labels, nothing else: not as a device, not as itself, no clip
    ("dashboard", f"edge/{DEV_A}/status"),
    ("dashboard", f"edge/{DEV_A}/state"),
    ("dashboard", f"edge/{DEV_A}/event/activation"),
    ("dashboard", f"edge/{DEV_A}/cmd/label/result"),
    ("dashboard", f"edge/{DEV_A}/cmd/mute"),
    ("dashboard", "edge/dashboard/status"),
    ("dashboard", "edge/dashboard/state"),
    ("dashboard", "edge/dashboard/event/activation"),
    ("dashboard", "edge/dashboard/cmd/label/result"),
    ("dashboard", f"edge-recorder/{DEV_A}/clip"),
    ("dashboard", "edge-recorder/dashboard/clip"),
    ("dashboard", "homeassistant/device/dashboard/config"),
    # the receiver writes nothing at all
    ("receiver", f"edge/{DEV_A}/status"),
    ("receiver", f"edge/{DEV_A}/state"),
    ("receiver", f"edge/{DEV_A}/event/activation"),
    ("receiver", f"edge/{DEV_A}/cmd/label"),
    ("receiver", f"edge/{DEV_A}/cmd/mute"),
    ("receiver", "edge/receiver/status"),
    ("receiver", "edge/receiver/state"),
    ("receiver", "edge/receiver/event/activation"),
    ("receiver", f"edge-recorder/{DEV_A}/clip"),
    ("receiver", "edge-recorder/receiver/clip"),
    ("receiver", "homeassistant/device/receiver/config"),
    # a device writes only under its own id
    (DEV_B, f"edge/{DEV_A}/status"),
    (DEV_B, f"edge/{DEV_A}/state"),
    (DEV_B, f"edge/{DEV_A}/event/activation"),
    (DEV_B, f"edge/{DEV_A}/cmd/label/result"),
    (DEV_B, f"edge/{DEV_A}/cmd/mute"),
    (DEV_B, f"edge/{DEV_A}/cmd/label"),
    (DEV_B, f"edge-recorder/{DEV_A}/clip"),
    (DEV_B, f"homeassistant/device/{DEV_A}/config"),
    (DEV_B, "edge/dashboard/state"),
    (DEV_B, "edge-recorder/receiver/clip"),
]


@pytest.mark.parametrize(("who", "topic"), FORBIDDEN,
                         ids=[f"{w[:9]}->{t}" for w, t in FORBIDDEN])
def test_each_account_publishes_only_its_own_topics(client, who, topic):
    # Every account that can read anything watches all it may read.
    dash = client("dashboard", subscribe=("edge/+/status", "edge/+/state", "edge/+/event/#",
                                          "edge/+/cmd/+/result"))
    receiver = client("receiver", subscribe=("edge-recorder/+/clip",))
    a = client(DEV_A, subscribe=(f"edge/{DEV_A}/cmd/+", "homeassistant/status"))
    b = client(DEV_B, subscribe=(f"edge/{DEV_B}/cmd/+",))
    publisher = client(who)
    assert publisher.publish(topic, b'{"forged": true}').is_failure, f"{who} may write {topic}"
    # Then one allowed message to each watcher. Mosquitto routes a publication to its
    # subscribers' queues before it answers the PUBACK, on one thread, and each queue is
    # delivered in order; so once a watcher has its marker, a forged message that had got
    # through would already be in front of it. No waiting on a clock.
    markers = {id(dash): f"edge/{DEV_A}/status", id(receiver): f"edge-recorder/{DEV_A}/clip",
               id(a): f"edge/{DEV_A}/cmd/label", id(b): f"edge/{DEV_B}/cmd/label"}
    sender = client("dashboard")
    assert not a.publish(f"edge/{DEV_A}/status", b"online").is_failure
    assert not a.publish(f"edge-recorder/{DEV_A}/clip", b"RIFF").is_failure
    assert not sender.publish(f"edge/{DEV_A}/cmd/label").is_failure
    assert not sender.publish(f"edge/{DEV_B}/cmd/label").is_failure
    for watcher in (dash, receiver, a, b):
        assert watcher.wait_for(markers[id(watcher)])
        assert [t for t, _ in watcher.messages] == [markers[id(watcher)]], \
            f"{topic} from {who} reached a subscriber"
