"""Uploading to a real Mosquitto broker: QoS 1, metadata, TLS, credentials, outages."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from edge.config import MqttUploadConfig
from edge.privacy import bundle
from edge.privacy.ledger import read_ledger
from edge.upload.senders.mqtt import MqttSender
from tests.fixtures.https import make_tls_files
from tests.fixtures.mqtt import TlsListener, free_port, make_password_file
from tests.upload_helpers import DEVICE, errors, rigs


@pytest.fixture
def rig(tmp_path):
    def sender(**kw: Any) -> MqttSender:
        return MqttSender(MqttUploadConfig(**{"tls": False, "timeout_s": 5.0, **kw}), DEVICE)

    with rigs(tmp_path, sender) as make:
        yield make


def test_mqtt5_delivers_each_clip_once_with_metadata_in_user_properties(
        mqtt_broker, mqtt_collector, rig):
    col = mqtt_collector(mqtt_broker, "edge-recorder/#")
    r = rig(host=mqtt_broker.host, port=mqtt_broker.port)
    clips = r.put(5)
    msgs = col.wait_for(5)
    r.wait_empty()
    assert len(msgs) == 5
    got = {m.user_properties["id"]: m for m in msgs}
    assert set(got) == set(clips)
    for cid, m in got.items():
        assert m.topic == f"edge-recorder/{DEVICE}/clip"
        assert m.payload == clips[cid]
        assert m.content_type == "audio/wav"
        assert m.user_properties["sha256"] == hashlib.sha256(clips[cid]).hexdigest()
        assert m.user_properties["device"] == DEVICE
        assert m.user_properties["model"] == "hey_jarvis"
        assert not m.retain
    delivered = [e for e in read_ledger(r.ledger.path).entries if e["result"] == "delivered"]
    assert sorted(e["clip"] for e in delivered) == sorted(clips)
    assert all(e["destination"] == f"mqtt://127.0.0.1:{mqtt_broker.port}/edge-recorder/"
               f"{DEVICE}/clip" for e in delivered)


def test_mqtt311_brokers_get_the_documented_envelope(mqtt_broker, mqtt_collector, rig):
    col = mqtt_collector(mqtt_broker, "edge-recorder/#", protocol=4)
    r = rig(host=mqtt_broker.host, port=mqtt_broker.port, protocol="3.1.1")
    clips = r.put(2)
    msgs = col.wait_for(2)
    assert len(msgs) == 2
    for m in msgs:
        head, _, audio = m.payload.partition(b"\n")
        meta, body = bundle.unpack(m.payload)
        assert audio == body == clips[meta["id"]]
        assert meta["content_type"] == "audio/wav" and meta["device"] == DEVICE
        assert meta["sha256"] == hashlib.sha256(body).hexdigest()


def test_wrong_broker_address_is_reported_once_then_delivered_when_it_appears(
        mosquitto_broker, mqtt_collector, rig, caplog):
    port = free_port()
    r = rig(host="127.0.0.1", port=port)
    clips = r.put(3)
    r.wait_failures(4)
    [msg] = errors(caplog, "upload to")
    assert "cannot reach MQTT broker 127.0.0.1" in msg and "upload.mqtt.host" in msg
    assert r.outbox.count() == 3
    broker = mosquitto_broker(port=port)
    col = mqtt_collector(broker, "edge-recorder/#")
    r.wait_empty()
    assert {m.user_properties["id"] for m in col.wait_for(3)} == set(clips)


def test_refused_credentials_are_reported_without_the_password_then_fixed(
        mosquitto_broker, mqtt_collector, rig, tmp_path, caplog):
    passwd = make_password_file(tmp_path, {"device": "right-horse-battery",
                                           "reader": "reader-pw"})
    broker = mosquitto_broker(password_file=passwd)
    pw_file = tmp_path / "mqtt-password"
    pw_file.write_text("wrong-staple-secret\n")
    r = rig(host=broker.host, port=broker.port, username="device", password_file=str(pw_file))
    clips = r.put(2)
    r.wait_failures(3)
    [msg] = errors(caplog, "upload to")
    assert "refused the connection" in msg and "upload.mqtt.password_file" in msg
    pw_file.write_text("right-horse-battery\n")       # the owner fixes the file: no restart
    col = mqtt_collector(broker, "edge-recorder/#", username="reader", password="reader-pw")
    r.wait_empty()
    assert {m.user_properties["id"] for m in col.wait_for(2)} == set(clips)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong-staple-secret" not in text and "right-horse-battery" not in text
    assert "right-horse-battery" not in (r.ledger.path.read_text())


def test_bad_certificate_is_reported_then_delivered_over_tls_once_the_ca_is_right(
        mosquitto_broker, rig, tmp_path, caplog):
    server = make_tls_files(tmp_path / "server", name="broker")
    other = make_tls_files(tmp_path / "other", name="other")
    broker = mosquitto_broker(tls=TlsListener(server.ca, server.cert, server.key))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(other.ca.read_bytes())
    r = rig(host="127.0.0.1", port=broker.port, tls=True, ca=str(ca_file))
    r.put(2)
    r.wait_failures(3)
    [msg] = errors(caplog, "upload to")
    assert "TLS certificate check failed" in msg and "upload.mqtt.ca" in msg
    assert r.outbox.count() == 2
    ca_file.write_bytes(server.ca.read_bytes())
    r.wait_empty()
    assert r.uploader.delivered == 2
    assert r.sender.destination.startswith("mqtts://")


def test_mutual_tls_with_a_client_certificate(mosquitto_broker, rig, tmp_path):
    import trustme

    ca = trustme.CA()
    srv, cli = ca.issue_cert("127.0.0.1"), ca.issue_cert("edge-device")
    paths = {}
    for name, pem in [("ca", ca.cert_pem), ("srv", srv.cert_chain_pems[0]),
                      ("srvkey", srv.private_key_pem), ("cli", cli.cert_chain_pems[0]),
                      ("clikey", cli.private_key_pem)]:
        paths[name] = tmp_path / f"{name}.pem"
        pem.write_to_path(str(paths[name]))
    broker = mosquitto_broker(tls=TlsListener(paths["ca"], paths["srv"], paths["srvkey"],
                                              require_certificate=True))
    r = rig(host="127.0.0.1", port=broker.port, tls=True, ca=str(paths["ca"]),
            cert=str(paths["cli"]), key=str(paths["clikey"]))
    r.put(1)
    r.wait_empty()
    assert r.uploader.delivered == 1
