"""The device on MQTT, against a real Mosquitto and a live daemon with the real models."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest

from edge.activations.store import ActivationLog, db_path
from edge.config import replace
from edge.mqtt.messages import check_activation, check_state
from edge.pipeline.events import State
from tests.fixtures.mqtt import MqttCollector
from tests.mqtt_helpers import (
    DEVICE,
    ROOT,
    Commander,
    DeviceRig,
    LiveSource,
    device_config,
    wake_and_request,
)
from tests.waiting import wait_for


@pytest.fixture
def commander(mqtt_broker: Any) -> Any:
    c = Commander(mqtt_broker)
    yield c
    c.close()


@pytest.fixture
def device(tmp_path: Any, mqtt_broker: Any) -> Any:
    rigs: list[DeviceRig] = []

    def start(samples: np.ndarray | None = None, hardware: Any = None, pin_factory: Any = None,
              **mqtt: Any) -> DeviceRig:
        cfg = device_config(tmp_path / "state", mqtt_broker, **mqtt)
        if hardware is not None:
            cfg = replace(cfg, hardware=hardware)
        rig = DeviceRig(cfg, LiveSource(samples), device_id=DEVICE, pin_factory=pin_factory)
        rigs.append(rig)
        return rig

    yield start
    for rig in rigs:
        rig.stop()


def activation(commander: Commander) -> dict[str, Any]:
    return commander.wait_for(lambda: commander.latest(f"{ROOT}/event/activation"), 30.0)


def test_device_announces_itself_with_retained_status_state_and_discovery(
        device: Any, commander: Commander, mqtt_broker: Any) -> None:
    rig = device()
    commander.wait_for(lambda: commander.latest(f"{ROOT}/state"))
    late = MqttCollector(mqtt_broker, "#")  # a newcomer gets the retained messages
    try:
        def by_topic() -> dict[str, Any]:
            msgs = {m.topic: m for m in late.wait_for(3)}
            return msgs if len(msgs) >= 3 else {}

        msgs = wait_for(by_topic, 25, "three retained topics")
        assert msgs[f"{ROOT}/status"].payload == b"online" and msgs[f"{ROOT}/status"].retain
        state = json.loads(msgs[f"{ROOT}/state"].payload)
        assert msgs[f"{ROOT}/state"].retain
        check_state(state)  # the shape the dashboard accepts
        assert state["mode"] == "listening"
        assert state["models"] == {"hey_jarvis": {"threshold": 0.5}}
        assert state["version"] and state["uptime_s"] >= 0
        disc = msgs[f"homeassistant/device/{DEVICE}/config"]
        assert disc.retain and json.loads(disc.payload)["dev"]["identifiers"]
    finally:
        late.close()
    rig.stop()
    assert commander.wait_for(lambda: any(t == f"{ROOT}/status" and p == b"offline"
                                          for t, p, _ in commander.messages))


def test_the_broker_publishes_offline_when_the_device_vanishes(
        device: Any, commander: Commander) -> None:
    rig = device()
    commander.wait_for(lambda: any(t == f"{ROOT}/status" and p == b"online"
                                   for t, p, _ in commander.messages))
    rig.mqtt.conn._client.socket().close()  # no DISCONNECT: the broker sends the last will
    assert commander.wait_for(lambda: any(t == f"{ROOT}/status" and p == b"offline"
                                          for t, p, _ in commander.messages))


def test_activation_event_is_metadata_only_and_updates_the_state(
        device: Any, commander: Commander) -> None:
    device(wake_and_request())
    ev = activation(commander)
    assert set(ev) == {"event_type", "id", "time", "wall_time", "model", "score", "threshold",
                       "reason", "duration_s", "likely_false", "kept"}
    assert ev["event_type"] == "activation" and ev["model"] == "hey_jarvis"
    assert ev["score"] >= 0.5 and ev["kept"] and ev["reason"] == "silence"
    check_activation(ev)
    raw = [p for t, p, _ in commander.messages if t == f"{ROOT}/event/activation"]
    assert all(len(p) < 1024 for p in raw)  # no audio rides along
    modes = commander.wait_for(lambda: [json.loads(p)["mode"] for t, p, _ in commander.messages
                                        if t == f"{ROOT}/state"])
    assert "recording" in modes
    state = commander.wait_for(
        lambda: (s := commander.latest(f"{ROOT}/state")) and s["last_activation"] and s)
    assert state["last_activation"]["id"] == ev["id"]
    assert state["last_activation"]["score"] == ev["score"]


def test_label_command_writes_the_label_to_the_devices_activation_log(
        device: Any, commander: Commander) -> None:
    rig = device(wake_and_request())
    ev = activation(commander)
    r = commander.call(DEVICE, "label", {"activation": ev["id"], "label": "false"})
    assert r["ok"] and r["activation"] == ev["id"] and r["label"] == "false"
    with ActivationLog.open(db_path(rig.cfg), create=False) as store:
        row = store.get(ev["id"])
    assert row["label"] == "false" and row["label_source"] == "mqtt"
    # the Home Assistant button sends {"activation": "last", "label": "false"}, no tx
    commander.send(DEVICE, "label", '{"activation": "last", "label": "true"}')
    r = commander.wait_result(lambda r: r.get("tx") is None and r.get("label") == "true")
    assert r["ok"] and r["activation"] == ev["id"]


def test_set_threshold_within_bounds_and_refused_outside(
        device: Any, commander: Commander) -> None:
    rig = device(threshold_min=0.2, threshold_max=0.9)
    policy = rig.daemon.detector.policy
    r = commander.call(DEVICE, "set_threshold", {"model": "hey_jarvis", "threshold": 0.7})
    assert r["ok"] and r["threshold"] == 0.7 and r["previous"] == 0.5
    assert policy.models[0].threshold == 0.7
    state = commander.wait_for(lambda: (s := commander.latest(f"{ROOT}/state"))
                               and s["models"]["hey_jarvis"]["threshold"] == 0.7 and s)
    assert state["models"]["hey_jarvis"]["threshold"] == 0.7
    for bad in ({"model": "hey_jarvis", "threshold": 0.95},
                {"model": "hey_jarvis", "threshold": 0.05},
                {"model": "alexa", "threshold": 0.5}):
        r = commander.call(DEVICE, "set_threshold", bad)
        assert not r["ok"] and r["error"]
    assert policy.models[0].threshold == 0.7


def test_soft_mute_on_and_off_when_the_owner_allows_remote_unmute(
        device: Any, commander: Commander) -> None:
    rig = device(allow_remote_unmute=True)
    r = commander.call(DEVICE, "mute", {"on": True})
    assert r["ok"] and r["muted"] and r["mute_causes"] == ["soft"]
    assert rig.daemon.recorder.state is State.MUTED
    commander.wait_for(lambda: (s := commander.latest(f"{ROOT}/state")) and s["muted"])
    r = commander.call(DEVICE, "mute", {"on": False})
    assert r["ok"] and not r["muted"]
    assert rig.daemon.recorder.state is State.LISTENING
    commander.wait_for(lambda: (s := commander.latest(f"{ROOT}/state"))
                       and s["mode"] == "listening")


def test_remote_unmute_is_refused_by_default(device: Any, commander: Commander) -> None:
    rig = device()
    assert commander.call(DEVICE, "mute", {"on": True})["ok"]
    r = commander.call(DEVICE, "mute", {"on": False})
    assert not r["ok"] and "unmute at the device" in r["error"]
    assert rig.daemon.recorder.state is State.MUTED


def test_soft_unmute_never_overrides_the_hardware_switch(
        device: Any, commander: Commander) -> None:
    from gpiozero.pins.mock import MockFactory

    from edge.config import HardwareConfig

    factory = MockFactory()
    rig = device(hardware=HardwareConfig(profile="generic-usb", pin_factory="mock", chime=False),
                 pin_factory=factory, allow_remote_unmute=True)
    switch = factory.pin(22)
    switch.drive_high()  # pull-up, active high: the switch in the mute position
    commander.wait_for(lambda: rig.daemon.recorder.state is State.MUTED)
    r = commander.call(DEVICE, "mute", {"on": True})
    assert r["ok"] and set(r["mute_causes"]) == {"switch", "soft"}
    r = commander.call(DEVICE, "mute", {"on": False})
    assert r["ok"] and r["muted"] and r["mute_causes"] == ["switch"]
    assert "switch" in r["note"]
    time.sleep(0.3)
    assert rig.daemon.recorder.state is State.MUTED
    switch.drive_low()  # the person at the device has the last word
    commander.wait_for(lambda: rig.daemon.recorder.state is State.LISTENING)


def test_stats_command_reports_the_recorder_and_the_activation_log(
        device: Any, commander: Commander) -> None:
    device(wake_and_request())
    activation(commander)
    r = commander.call(DEVICE, "stats", {"since": "24h"})
    assert r["ok"]
    assert r["recorder"]["detections"] == 1 and r["recorder"]["clips"] == 1
    assert r["activation_log"]["counts"]["activations"] == 1
    assert r["state"]["mode"] in ("listening", "recording")


def test_purge_needs_its_confirmation_token(device: Any, commander: Commander) -> None:
    rig = device()
    clips = rig.cfg.under_state(rig.cfg.output.clips_dir)
    clips.mkdir(parents=True, exist_ok=True)
    ours = clips / "0a0a0a0a-0000-4000-8000-00000000000a.wav"  # a name the recorder issues
    ours.write_bytes(b"RIFF....")
    first = commander.call(DEVICE, "purge")
    assert first["ok"] and not first["done"] and len(first["confirm"]) == 16
    wrong = commander.call(DEVICE, "purge", {"confirm": "0" * 16})
    assert not wrong["ok"] and ours.exists()
    # a wrong answer uses the token up
    stale = commander.call(DEVICE, "purge", {"confirm": first["confirm"]})
    assert not stale["ok"] and ours.exists()
    token = commander.call(DEVICE, "purge")["confirm"]
    done = commander.call(DEVICE, "purge", {"confirm": token})
    assert done["ok"] and done["done"] and done["files"] >= 1
    assert not ours.exists()


def test_retained_commands_are_ignored(device: Any, commander: Commander) -> None:
    # one waiting on the broker before the device starts, one arriving live
    commander.send(DEVICE, "mute", {"on": True, "tx": "old"}, retain=True)
    rig = device()
    commander.send(DEVICE, "set_threshold", {"model": "hey_jarvis", "threshold": 0.8,
                                             "tx": "live"}, retain=True)
    # a plain command after them proves the device has read its queue
    assert commander.call(DEVICE, "stats")["ok"]
    assert rig.daemon.recorder.state is State.LISTENING
    assert rig.daemon.detector.policy.models[0].threshold == 0.5
    assert not [r for _t, r in commander.results if r.get("tx") in ("old", "live")]
    assert rig.mqtt.ignored_retained == 2
    for name in ("mute", "set_threshold"):  # tidy the broker for other tests
        commander.send(DEVICE, name, b"", retain=True)


FORGED = ("start_recording", "record", "recording", "led_off", "indicator_off", "fetch_audio",
          "get_clip", "audio", "upload", "unmute_hardware", "shell")


def test_no_command_can_start_a_recording_or_fetch_audio(
        device: Any, commander: Commander) -> None:
    rig = device()
    for name in FORGED:
        r = commander.call(DEVICE, name, {"on": True})
        assert not r["ok"] and "unknown command" in r["error"], name
    assert rig.daemon.recorder.stats.detections == 0
    assert rig.daemon.recorder.state is State.LISTENING
    sizes = [len(p) for t, p, _ in commander.messages if t.startswith(ROOT)]
    assert max(sizes) < 4096  # nothing audio-sized was ever published


def nasty_payloads(seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [rng.bytes(int(n)) for n in rng.integers(1, 300, 12)]
    out += [b"", b"null", b"[]", b"42", b'"on"', b"{", b'{"on": "true"}', b'{"on": 1}',
            b'{"on": null}', b'{"on": true, "extra": 1}', b'{"on": [true]}',
            b'{"tx": {"a": 1}, "on": true}', b'{"tx": "' + b"x" * 100 + b'", "on": true}',
            b"[" * 2000 + b"]" * 2000, b'{"a":' * 800 + b"1" + b"}" * 800,
            b"[" * 3000 + b"]" * 3000,
            b'{"on": true, "pad": "' + b"x" * 70000 + b'"}', b"\xff\xfe{}",
            b'{"model": "hey_jarvis", "threshold": NaN}',
            b'{"model": "hey_jarvis", "threshold": 1e999}',
            b'{"model": "hey_jarvis", "threshold": "0.7"}',
            b'{"model": {"$ne": 1}, "threshold": 0.7}',
            b'{"activation": "../../etc/passwd", "label": "false"}',
            b'{"activation": "last", "label": "FALSE"}',
            b'{"activation": "last; DROP TABLE activations", "label": "false"}',
            b'{"confirm": "not-a-token"}', b'{"since": 12}']
    return out


def test_fuzzed_command_payloads_get_an_error_result_and_change_nothing(
        device: Any, commander: Commander) -> None:
    rig = device(wake_and_request())
    activation(commander)

    def logged() -> list[Any]:
        # the MQTT event and the log row are written by different threads: wait for the row
        if not db_path(rig.cfg).exists():
            return []
        with ActivationLog.open(db_path(rig.cfg), create=False) as store:
            return store.rows()

    before = commander.wait_for(lambda: logged() or None)
    assert len(before) == 1
    sent = 0
    for name in ("mute", "set_threshold", "label", "purge", "stats"):
        for payload in nasty_payloads():
            commander.send(DEVICE, name, payload)
            sent += 1
    wait_for(lambda: rig.mqtt.refused >= sent, 30, "every command to be refused", poll_s=0.05)
    assert rig.mqtt.refused == sent and rig.mqtt.handled == 0
    commander.wait_for(lambda: len(commander.results) >= sent)
    assert all(not r["ok"] and r["error"] for _t, r in commander.results)
    assert rig.daemon.recorder.state is State.LISTENING
    assert rig.daemon.detector.policy.models[0].threshold == 0.5
    with ActivationLog.open(db_path(rig.cfg), create=False) as store:
        assert store.rows() == before
    assert (rig.cfg.state_path / "activations.sqlite3").exists()
