"""What the device publishes over ``[mqtt]``, in words: what leaves besides the ledger's clips.

The ledger (``edge.privacy.ledger``) records every clip, attempt by attempt: it is the
record of the audio that left. The metadata the MQTT device publishes is not written
there message by message, on purpose: state goes out every ``state_interval_s`` and on
each change, so a fsynced ledger line per message would write to the SD card all day
while the device is idle (SECURITY.md: nothing is written while idle) and bury the clips
among thousands of lines. It is also fully determined by the config. So ``edge audit``
names every kind of message instead: its topic, when it goes, whether the broker keeps
it, and its fields, taken from the very functions that build the messages (a sample is
built here and its keys read), so this list cannot drift from what is sent.

>>> [d.topic for d in mqtt_disclosures(MqttConfig(discovery=False), "3f9a1c0d5e7b2a41")][:2]
['edge/3f9a1c0d5e7b2a41/status', 'edge/3f9a1c0d5e7b2a41/state']
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import MqttConfig
from edge.mqtt.discovery import discovery_payload, discovery_topic
from edge.mqtt.messages import STATUS, activation_message, state_message
from edge.mqtt.topics import DeviceTopics

UNKNOWN_ID = "<device id>"
STATE_DETAIL = {"models": "models (each one's threshold)",
                "last_activation": "last_activation (its id, time, model and score)"}


@dataclass(frozen=True)
class Disclosure:
    """One kind of message the device publishes."""

    topic: str
    when: str
    retained: bool
    """Kept by the broker and given to every later subscriber, after the device is gone."""
    carries: tuple[str, ...]
    """Its fields (or its possible values)."""


def mqtt_disclosures(m: MqttConfig, device_id: str | None) -> list[Disclosure]:
    """Every kind of message the device publishes with this ``[mqtt]`` section (metadata
    only: no message carries audio)."""
    topics = DeviceTopics(m.base_topic, device_id or UNKNOWN_ID)
    state = state_message(mode="listening", mute_causes=[], models={}, version="",
                          uptime_s=0.0, rtf=None, last_activation=None, false_per_hour=0.0,
                          wall_time=0.0)
    event = activation_message(activation_id="", wall_time=0.0, model="", score=0.0,
                               threshold=0.0, reason="", duration_s=0.0, likely_false=False,
                               kept=False)
    out = [
        Disclosure(topics.status, "on each connection; 'offline' when the device stops, "
                                  "or from the broker when it vanishes (its last will)",
                   True, STATUS),
        Disclosure(topics.state, f"on each connection, on every change and every "
                                 f"{m.state_interval_s:g} s",
                   True, tuple(STATE_DETAIL.get(k, k) for k in state)),
        Disclosure(topics.activation, "after each activation: every wake, kept or not",
                   False, tuple(event)),
        Disclosure(topics.result("<name>"), "in answer to each command received",
                   False, ("command", "tx", "ok", "error", "the command's answer")),
    ]
    if m.discovery:
        out.append(Disclosure(
            discovery_topic(m.discovery_prefix, topics.device_id),
            "on each connection and whenever Home Assistant announces itself",
            True, tuple(f"dev.{k}" for k in discovery_payload(topics)["dev"])
            + ("the topics above, as Home Assistant entities",)))
    return out
