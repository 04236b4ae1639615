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
