"""Home Assistant MQTT discovery: one device-based message for the whole device.

Published retained at ``<prefix>/device/<device id>/config``, and again whenever
Home Assistant announces itself (``<prefix>/status`` = ``online``). Every entity
reads the device's own topics; availability follows ``status`` (the last will).
The soft-mute switch and the "last wake was false" button send ordinary commands,
so they are checked like any other.
"""

from __future__ import annotations

from typing import Any

from edge import __version__
from edge.mqtt.messages import EVENT_TYPE, MODES, encode
from edge.mqtt.topics import DeviceTopics

ON, OFF = "ON", "OFF"


def discovery_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/device/{device_id}/config"


def discovery_payload(topics: DeviceTopics, device_name: str = "") -> dict[str, Any]:
    """``device_name``: the device's friendly name (``mqtt.name``), else one made of its id."""
    did = topics.device_id
    uid = f"edge_recorder_{did}"
    state = topics.state

    def comp(platform: str, name: str, key: str, **extra: Any) -> dict[str, Any]:
        return {"p": platform, "name": name, "unique_id": f"{uid}_{key}", **extra}

    return {
        "dev": {"identifiers": [uid], "name": device_name or f"edge-recorder {did[:6]}",
                "manufacturer": "edge-recorder", "model": "wake-word edge recorder",
                "sw_version": __version__},
        "o": {"name": "edge-recorder", "sw_version": __version__},
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "cmps": {
            "state": comp("sensor", "State", "state", state_topic=state,
                          value_template="{{ value_json.mode }}", device_class="enum",
                          options=list(MODES), icon="mdi:microphone-message"),
            "muted": comp("binary_sensor", "Muted", "muted", state_topic=state,
                          value_template="{{ 'ON' if value_json.muted else 'OFF' }}",
                          payload_on=ON, payload_off=OFF, icon="mdi:microphone-off"),
            "recording": comp("binary_sensor", "Recording", "recording", state_topic=state,
                              value_template="{{ 'ON' if value_json.recording else 'OFF' }}",
                              payload_on=ON, payload_off=OFF, device_class="sound"),
            "false_per_hour": comp("sensor", "False activations per hour", "false_per_hour",
                                   state_topic=state,
                                   value_template="{{ value_json.false_per_hour }}",
                                   unit_of_measurement="/h", state_class="measurement",
                                   icon="mdi:alarm-light-off-outline"),
            "last_activation": comp("event", "Last activation", "last_activation",
                                    state_topic=topics.activation, event_types=[EVENT_TYPE],
                                    icon="mdi:account-voice"),
            "soft_mute": comp("switch", "Soft mute", "soft_mute",
                              command_topic=topics.cmd("mute"), state_topic=state,
                              value_template="{{ 'ON' if 'soft' in value_json.mute_causes "
                                             "else 'OFF' }}",
                              payload_on=encode({"on": True}), payload_off=encode({"on": False}),
                              state_on=ON, state_off=OFF, icon="mdi:microphone-off"),
            "last_wake_false": comp("button", "Last wake was false", "last_wake_false",
                                    command_topic=topics.cmd("label"),
                                    payload_press=encode({"activation": "last",
                                                          "label": "false"}),
                                    icon="mdi:thumb-down-outline"),
        },
    }
