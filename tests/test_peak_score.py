"""One wake, one peak score: the activation log, the sidecar, MQTT, the dashboard and replay
all show the highest score of the whole run over the threshold, not the score at the
trigger (which is lower when the run climbs after it, as a spoken "hey jarvis" does).

A live daemon (real models, real Mosquitto) hears a wake word; the dashboard ingests the
very message the device sent; `edge log` and `edge replay` run as a person runs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main as edge
from edge.dashboard.ingest import Incoming, Ingestor
from edge.dashboard.store import FleetStore
from tests.fixtures.audio import write_wav
from tests.mqtt_helpers import (
    DEVICE,
    ROOT,
    Commander,
    DeviceRig,
    LiveSource,
    device_config,
    wake_and_request,
)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def commander(mqtt_broker: Any) -> Any:
    c = Commander(mqtt_broker)
    yield c
    c.close()


def test_one_wake_shows_the_same_peak_in_the_log_sidecar_mqtt_dashboard_and_replay(
        tmp_path: Path, mqtt_broker: Any, commander: Commander, capsys: Any) -> None:
    samples = wake_and_request()
    state = tmp_path / "state"
    rig = DeviceRig(device_config(state, mqtt_broker), LiveSource(samples), device_id=DEVICE)
    try:
        event = commander.wait_for(lambda: commander.latest(f"{ROOT}/event/activation"), 30.0)
        last = commander.wait_for(
            lambda: (s := commander.latest(f"{ROOT}/state")) and s["last_activation"], 15.0)
    finally:
        rig.stop()
    assert event["kept"] and event["reason"] == "silence"

    # replay: the same audio as a file, as `edge replay --json` reads it
    wav = write_wav(tmp_path / "wake.wav", samples)
    assert edge(["replay", str(wav), "--json"]) == 0
    replay = json_lines(capsys.readouterr().out)
    [detection] = [o for o in replay if o["event"] == "detection"]
    [clip] = [o for o in replay if o["event"] == "clip"]
    peak = clip["peak"]
    assert detection["score"] < peak  # the run climbs after the trigger: this test can tell

    # the activation log, through `edge log --json`
    config = tmp_path / "edge.toml"
    config.write_text(f'state_dir = "{state}"\n')
    assert edge(["log", "--config", str(config), "--json"]) == 0
    [row] = json_lines(capsys.readouterr().out)
    # the sidecar the local sink wrote beside the clip
    [sidecar] = [json.loads(p.read_text()) for p in (state / "clips").glob("*.json")]
    # the dashboard, fed the very bytes the device published
    [raw] = [p for t, p, _ in commander.messages if t == f"{ROOT}/event/activation"]
    fleet = FleetStore.open(tmp_path / "fleet.sqlite3")
    try:
        Ingestor(fleet).ingest([Incoming(f"{ROOT}/event/activation", raw, False, 0.0)])
        [shown] = fleet.activations(DEVICE)
    finally:
        fleet.close()

    assert row["id"] == event["id"] == sidecar["activation_id"] == shown["id"]
    assert {"log": row["peak_score"], "sidecar": sidecar["score"], "mqtt": event["score"],
            "mqtt state": last["score"], "dashboard": shown["score"], "replay": peak} == \
        dict.fromkeys(("log", "sidecar", "mqtt", "mqtt state", "dashboard", "replay"), peak)
