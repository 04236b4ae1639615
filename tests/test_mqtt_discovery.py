"""Home Assistant discovery, checked against the documented device-based discovery schema.

The checks follow Home Assistant's MQTT integration (``schemas.py``: DEVICE_DISCOVERY_SCHEMA,
MQTT_ENTITY_DEVICE_INFO_SCHEMA, MQTT_ORIGIN_INFO_SCHEMA; each platform's DISCOVERY_SCHEMA)
and the documentation of device-based discovery: abbreviations are expanded first, then
the device, origin and components are checked as Home Assistant would.
"""

from __future__ import annotations

import json
import re
from typing import Any

from edge.mqtt.discovery import discovery_payload, discovery_topic
from edge.mqtt.messages import EVENT_TYPE, MODES, activation_message, state_message
from edge.mqtt.topics import DeviceTopics
from tests.fixtures.mqtt import MqttCollector
from tests.mqtt_helpers import Commander

ABBREVIATIONS = {"dev": "device", "o": "origin", "cmps": "components", "p": "platform",
                 "avty_t": "availability_topic", "pl_avail": "payload_available",
                 "pl_not_avail": "payload_not_available", "stat_t": "state_topic",
                 "cmd_t": "command_topic", "uniq_id": "unique_id", "val_tpl": "value_template",
                 "dev_cla": "device_class", "unit_of_meas": "unit_of_measurement",
                 "stat_cla": "state_class", "pl_on": "payload_on", "pl_off": "payload_off",
                 "pl_prs": "payload_press", "stat_on": "state_on", "stat_off": "state_off",
                 "ic": "icon", "ops": "options", "e": "encoding"}
DEVICE_ABBREVIATIONS = {"ids": "identifiers", "cns": "connections", "mf": "manufacturer",
                        "mdl": "model", "sw": "sw_version", "hw": "hw_version",
                        "sa": "suggested_area", "cu": "configuration_url",
                        "sn": "serial_number", "via_device": "via_device", "name": "name"}
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}

TOP_LEVEL = {"device", "origin", "components", "availability", "availability_mode",
             "availability_template", "availability_topic", "payload_available",
             "payload_not_available", "state_topic", "command_topic", "qos", "encoding"}
DEVICE_KEYS = {"identifiers", "connections", "manufacturer", "model", "name", "hw_version",
               "serial_number", "sw_version", "via_device", "suggested_area",
               "configuration_url"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
COMMON = {"platform", "name", "unique_id", "icon", "device_class", "entity_category",
          "enabled_by_default", "object_id", "default_entity_id", "json_attributes_topic",
          "json_attributes_template", "availability_topic", "availability", "qos", "encoding",
          "value_template"}
PLATFORMS: dict[str, dict[str, Any]] = {
    "sensor": {"required": {"state_topic"}, "optional": {"unit_of_measurement", "state_class",
                                                         "options", "expire_after",
                                                         "force_update",
                                                         "suggested_display_precision"}},
    "binary_sensor": {"required": {"state_topic"}, "optional": {"payload_on", "payload_off",
                                                                "expire_after", "off_delay",
                                                                "force_update"}},
    "switch": {"required": {"command_topic"}, "optional": {"state_topic", "payload_on",
                                                           "payload_off", "state_on",
                                                           "state_off", "optimistic",
                                                           "retain"}},
    "button": {"required": {"command_topic"}, "optional": {"payload_press", "retain"}},
    "event": {"required": {"state_topic", "event_types"}, "optional": set()},
}
BINARY_SENSOR_CLASSES = {"battery", "connectivity", "motion", "occupancy", "power",
                         "problem", "running", "sound", "update", "vibration"}
SENSOR_STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
OBJECT_ID = re.compile(r"[a-zA-Z0-9_-]+")


def expand(d: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {table.get(k, k): v for k, v in d.items()}


def valid_subscribe_topic(t: Any) -> bool:
    if not isinstance(t, str) or not t or "\0" in t or len(t.encode()) > 65535:
        return False
    levels = t.split("/")
    return all(lv in ("+", "#") or ("+" not in lv and "#" not in lv) for lv in levels) and \
        ("#" not in levels or levels.index("#") == len(levels) - 1)


def valid_publish_topic(t: Any) -> bool:
    return valid_subscribe_topic(t) and "+" not in t and "#" not in t


def check_device_discovery(topic: str, payload: dict[str, Any]) -> list[str]:
    """Every way ``payload`` breaks the device-based discovery schema (empty: none)."""
    problems = []
    parts = topic.split("/")
    if len(parts) != 4 or parts[1] != "device" or parts[3] != "config" or \
            not OBJECT_ID.fullmatch(parts[2]):
        problems.append(f"topic {topic} is not <prefix>/device/<object_id>/config")
    p = expand(payload, ABBREVIATIONS)
    for key in sorted(set(p) - TOP_LEVEL):
        problems.append(f"top-level key {key!r} is not allowed")
    dev = p.get("device")
    if not isinstance(dev, dict):
        problems.append("device is required")
    else:
        dev = expand(dev, DEVICE_ABBREVIATIONS)
        problems += [f"device key {k!r} is not allowed" for k in sorted(set(dev) - DEVICE_KEYS)]
        ids = dev.get("identifiers")
        if not (ids and isinstance(ids, list | str)) and not dev.get("connections"):
            problems.append("device needs identifiers or connections")
        problems += [f"device {k} must be a string" for k, v in dev.items()
                     if k != "identifiers" and k != "connections" and not isinstance(v, str)]
    origin = p.get("origin")
    if not isinstance(origin, dict) or not isinstance(
            expand(origin, ORIGIN_ABBREVIATIONS).get("name"), str):
        problems.append("origin with a name is required")
    else:
        origin = expand(origin, ORIGIN_ABBREVIATIONS)
        problems += [f"origin key {k!r} is not allowed" for k in sorted(set(origin) -
                                                                        ORIGIN_KEYS)]
    if "availability_topic" in p and not valid_subscribe_topic(p["availability_topic"]):
        problems.append("availability_topic is not a valid topic")
    if "qos" in p and p["qos"] not in (0, 1, 2):
        problems.append("qos must be 0, 1 or 2")
    comps = p.get("components")
    if not isinstance(comps, dict) or not comps:
        problems.append("components must be a non-empty mapping")
        return problems
    seen: set[str] = set()
    for cid, raw in comps.items():
        c = expand(raw, ABBREVIATIONS)
        platform = c.get("platform")
        if platform not in PLATFORMS:
            problems.append(f"{cid}: platform {platform!r} is not supported")
            continue
        spec = PLATFORMS[platform]
        for key in sorted(spec["required"] - set(c)):
            problems.append(f"{cid}: {key} is required for a {platform}")
        for key in sorted(set(c) - COMMON - spec["required"] - spec["optional"]):
            problems.append(f"{cid}: {key!r} is not an option of a {platform}")
        uid = c.get("unique_id")
        if not isinstance(uid, str) or not uid:
            problems.append(f"{cid}: unique_id is required in device-based discovery")
        elif uid in seen:
            problems.append(f"{cid}: unique_id {uid} is used twice")
        else:
            seen.add(uid)
        if "state_topic" in c and not valid_subscribe_topic(c["state_topic"]):
            problems.append(f"{cid}: state_topic is not a valid topic")
        if "command_topic" in c and not valid_publish_topic(c["command_topic"]):
            problems.append(f"{cid}: command_topic is not a valid publish topic")
        for key in ("name", "value_template", "payload_on", "payload_off", "payload_press",
                    "state_on", "state_off", "icon", "unit_of_measurement"):
            if key in c and not isinstance(c[key], str):
                problems.append(f"{cid}: {key} must be a string")
        if platform == "event" and not (isinstance(c.get("event_types"), list) and all(
                isinstance(e, str) for e in c["event_types"])):
            problems.append(f"{cid}: event_types must be a list of strings")
        if platform == "binary_sensor" and c.get("device_class", "sound") not in \
                BINARY_SENSOR_CLASSES:
            problems.append(f"{cid}: device_class {c['device_class']!r} is not a binary "
                            "sensor class")
        if platform == "sensor":
            if c.get("device_class") == "enum" and (
                    not c.get("options") or "unit_of_measurement" in c or "state_class" in c):
                problems.append(f"{cid}: an enum sensor needs options, and no unit or "
                                "state class")
            if "state_class" in c and c["state_class"] not in SENSOR_STATE_CLASSES:
                problems.append(f"{cid}: state_class {c['state_class']!r} is not one")
    return problems


TOPICS = DeviceTopics("edge", "0123456789abcdef")


def test_discovery_payload_meets_the_device_based_discovery_schema() -> None:
    topic = discovery_topic("homeassistant", TOPICS.device_id)
    payload = json.loads(json.dumps(discovery_payload(TOPICS)))
    assert check_device_discovery(topic, payload) == []


def test_discovery_has_the_entities_field_testers_asked_for() -> None:
    comps = discovery_payload(TOPICS)["cmps"]
    kinds = {cid: c["p"] for cid, c in comps.items()}
    assert kinds == {"state": "sensor", "muted": "binary_sensor", "recording": "binary_sensor",
                     "false_per_hour": "sensor", "last_activation": "event",
                     "soft_mute": "switch", "last_wake_false": "button"}
    assert comps["state"]["options"] == list(MODES)
    assert comps["last_activation"]["state_topic"] == TOPICS.activation
    assert comps["soft_mute"]["command_topic"] == TOPICS.cmd("mute")
    assert json.loads(comps["soft_mute"]["payload_on"]) == {"on": True}
    assert json.loads(comps["last_wake_false"]["payload_press"]) == {"activation": "last",
                                                                     "label": "false"}
    assert discovery_payload(TOPICS)["availability_topic"] == TOPICS.status


def test_the_checker_catches_broken_payloads() -> None:
    good = discovery_payload(TOPICS)
    broken: list[dict[str, Any]] = [
        {k: v for k, v in good.items() if k != "dev"},
        {k: v for k, v in good.items() if k != "o"},
        {**good, "dev": {"name": "x"}},
        {**good, "bogus": 1},
        {**good, "cmps": {"x": {"p": "sensor", "unique_id": "u"}}},
        {**good, "cmps": {"x": {"p": "switch", "unique_id": "u", "command_topic": "a/+"}}},
        {**good, "cmps": {"x": {"p": "event", "unique_id": "u", "state_topic": "a"}}},
        {**good, "cmps": {"x": {"p": "toaster", "unique_id": "u"}}},
        {**good, "cmps": {"x": {"p": "button", "command_topic": "a"}}},
    ]
    for payload in broken:
        assert check_device_discovery("homeassistant/device/abc/config", payload), payload
    assert check_device_discovery("homeassistant/device/a.b/config", good)


def test_entities_read_fields_the_device_publishes() -> None:
    """Each entity's template names fields that the state and event messages carry."""
    state = state_message(mode="muted", mute_causes=["soft"], models={"m": 0.5},
                          version="1", uptime_s=1, rtf=0.1, last_activation=None,
                          false_per_hour=2, wall_time=1.7e9)
    event = activation_message(activation_id="a", wall_time=1.7e9, model="m", score=0.9,
                               threshold=0.5, reason="silence", duration_s=2.0,
                               likely_false=False, kept=True)
    for cid, c in discovery_payload(TOPICS)["cmps"].items():
        for field in re.findall(r"value_json\.(\w+)", c.get("value_template", "")):
            assert field in state, (cid, field)
    assert event["event_type"] in discovery_payload(TOPICS)["cmps"]["last_activation"][
        "event_types"] == [EVENT_TYPE]
    assert state["mode"] in MODES and state["muted"] is True


def test_discovery_is_sent_again_when_home_assistant_comes_online(
        tmp_path: Any, mqtt_broker: Any) -> None:
    from tests.mqtt_helpers import DeviceRig, LiveSource, device_config

    cfg = device_config(tmp_path / "state", mqtt_broker)
    seen = MqttCollector(mqtt_broker, "homeassistant/device/#")
    rig = DeviceRig(cfg, LiveSource(), device_id="0123456789abcdef")
    ha = Commander(mqtt_broker)
    try:
        first = seen.wait_for(1)
        assert first[0].topic == "homeassistant/device/0123456789abcdef/config"
        ha.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        again = seen.wait_for(2)
        assert len(again) >= 2 and again[1].payload == first[0].payload
        assert check_device_discovery(again[1].topic, json.loads(again[1].payload)) == []
    finally:
        rig.stop()
        ha.close()
        seen.close()
