"""`edge audit`: the owner sees exactly what left the device, and when."""

from __future__ import annotations

import json

from edge.cli import main as edge
from edge.clock import FakeClock
from edge.privacy.ledger import Ledger
from edge.upload.queue import Outbox


def ledger_with_history(tmp_path) -> None:
    clock = FakeClock(wall=1_800_000_000.0)
    led = Ledger(tmp_path / "ledger.jsonl", clock)
    dest = "mqtts://broker:8883/edge-recorder/0123456789abcdef/clip"
    led.append(clip="a", destination=dest, bytes=320044, sha256="aa", result="sending")
    led.append(clip="a", destination=dest, bytes=320044, sha256="aa", result="failed",
               error="cannot reach MQTT broker")
    clock.advance(2)
    led.append(clip="a", destination=dest, bytes=320044, sha256="aa", result="sending")
    led.append(clip="a", destination=dest, bytes=320044, sha256="aa", result="delivered")
    led.append(clip="b", destination=dest, bytes=1000, sha256="bb", result="sending")
    # the process was killed here: b's upload is unconfirmed
    led.close()
    Outbox(tmp_path / "outbox").put("b", b"x" * 1000, "audio/wav", {})


def config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(f'state_dir = "{tmp_path}"\n')
    return str(p)


def test_audit_text_shows_each_attempt_and_a_summary(tmp_path, capsys):
    ledger_with_history(tmp_path)
    assert edge(["audit", "--config", config(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("2027-")]
    assert [line.split()[1] for line in lines] == ["failed", "delivered", "unconfirmed"]
    assert "2027-01-15T08:00:02.000+00:00" in lines[1]
    assert "cannot reach MQTT broker" in lines[0]
    assert "delivered: 1 clip(s), 0.32 MB" in out
    assert "unconfirmed (stopped mid-upload): 1; still queued: 1" in out


def test_audit_json_is_one_document_with_every_entry(tmp_path, capsys):
    ledger_with_history(tmp_path)
    assert edge(["audit", "--json", "--config", config(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["result"] for e in doc["entries"]] == ["sending", "failed", "sending", "delivered",
                                                     "sending"]
    assert doc["summary"]["delivered"] == {
        "clips": 1, "bytes": 320044,
        "destinations": ["mqtts://broker:8883/edge-recorder/0123456789abcdef/clip"]}
    assert doc["queued"] == 1 and doc["unreadable_lines"] == 0


def test_audit_of_a_device_that_never_uploaded(tmp_path, capsys):
    assert edge(["audit", "--config", config(tmp_path)]) == 0
    assert "nothing has left this device" in capsys.readouterr().out


def test_audit_with_mqtt_on_never_claims_nothing_left_and_names_what_did(
        tmp_path, mqtt_broker, capsys):
    """Uploads off, [mqtt] on, a real Mosquitto and a real activation: the metadata that
    left (status, state, the activation event, discovery) is named by the audit."""
    import numpy as np

    from tests.fixtures.audio import phrase
    from tests.mqtt_helpers import Commander, DeviceRig, LiveSource, device_config

    device = "0123456789abcdef"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "device_id").write_text(device + "\n")
    cfg = device_config(state, mqtt_broker)
    assert cfg.upload.mode == "off"
    audio = np.concatenate([np.zeros(8000, np.int16), phrase("hey jarvis"),
                            np.zeros(4000, np.int16), phrase("what is the weather like today"),
                            np.zeros(24000, np.int16)])
    watch, ha = Commander(mqtt_broker), Commander(mqtt_broker, base="homeassistant")
    rig = DeviceRig(cfg, LiveSource(audio), device_id=device)
    try:
        event = watch.wait_for(lambda: watch.latest(f"edge/{device}/event/activation"), 30.0)
        ha.wait_for(lambda: ha.messages)
    finally:
        rig.stop()
        watch.close()
        ha.close()
    left = {t for t, _, _ in watch.messages + ha.messages}
    assert {f"edge/{device}/event/activation", f"edge/{device}/state",
            f"homeassistant/device/{device}/config"} <= left
    conf = tmp_path / "c.toml"
    conf.write_text(f'state_dir = "{state}"\n[mqtt]\nenabled = true\nhost = "{mqtt_broker.host}"'
                    f"\nport = {mqtt_broker.port}\ntls = false\n")

    assert edge(["audit", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "nothing has left" not in out
    assert "no audio has left this device" in out and "metadata" in out
    assert f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}" in out
    for topic in left:  # every topic that carried something out is named
        assert topic in out, topic
    line = next(x for x in out.splitlines() if f"edge/{device}/event/activation" in x)
    assert all(field in line for field in event)  # with every field it carried

    assert edge(["audit", "--json", "--config", str(conf)]) == 0
    doc = json.loads(capsys.readouterr().out)
    named = {m["topic"] for m in doc["also_published"]["messages"]}
    assert left <= named


def test_audit_with_mqtt_off_and_no_uploads_says_nothing_left(tmp_path, capsys):
    assert edge(["audit", "--config", config(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nothing has left this device" in out and "[mqtt]" not in out
