"""The MQTT command inbox (edge.mqtt.lanes, edge.mqtt.device): bounded in bytes whatever
arrives, a mute posted as it arrives, purges and mute answers ahead of the rest.

The live version, on a real broker and audio loop, is
tests/test_mqtt_hostile_commands.py; here paho's callback is called directly with every
payload size, as paho's network thread would call it.
"""

from __future__ import annotations

import queue
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from edge.clock import FakeClock
from edge.config import Config
from edge.mqtt.command_payloads import MAX_PAYLOAD
from edge.mqtt.device import MqttPlugin
from edge.mqtt.lanes import FAST, NORMAL, Lanes
from edge.pipeline.runner import Commands

DEVICE = "0123456789abcdef"


@dataclass
class Message:
    """What paho hands ``on_message``: a topic, a payload, the retain flag."""

    topic: str
    payload: bytes
    retain: bool = False


class Mute:
    """The hardware plugin's soft mute, as the MQTT device uses it: posted, not waited for."""

    def __init__(self) -> None:
        self.posted: list[bool] = []

    def soft_mute_soon(self, on: bool, by: str) -> Future[tuple[bool, tuple[str, ...]]]:
        self.posted.append(on)
        done: Future[tuple[bool, tuple[str, ...]]] = Future()
        done.set_result((on, ("soft",) if on else ()))
        return done


def plugin() -> tuple[MqttPlugin, Mute]:
    mute = Mute()
    return MqttPlugin(Config(), FakeClock(), Commands(), thresholds={"hey_jarvis": 0.5},
                      mute=mute, device_id=DEVICE), mute


def drain(p: MqttPlugin) -> list[tuple[Any, ...]]:
    out = []
    while True:
        try:
            out.append(p._q.get(0.0))
        except queue.Empty:
            return out


def test_purges_and_mute_answers_overtake_everything_queued_and_each_lane_is_bounded() -> None:
    lanes = Lanes()
    assert all(lanes.put(("label", i)) for i in range(NORMAL))
    assert not lanes.put(("label", "one too many"))  # refused at once, never waits
    assert lanes.put(("purge",), fast=True) and lanes.put(("mute answer",), fast=True)
    assert [lanes.get(0.0) for _ in range(3)] == [("purge",), ("mute answer",), ("label", 0)]
    assert all(lanes.put(("mute answer", i), fast=True) for i in range(FAST))
    assert not lanes.put(("mute answer", "one too many"), fast=True)
    lanes.close()
    assert lanes.get(10.0) is None


SIZES = st.integers(0, 2 * MAX_PAYLOAD) | st.sampled_from(
    [MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 1 << 20, 4 << 20])


@given(name=st.sampled_from(["mute", "label", "purge", "stats", "set_threshold", "nonsense",
                             "x" * 300]),
       size=SIZES)
@example(name="mute", size=MAX_PAYLOAD)
@example(name="mute", size=MAX_PAYLOAD + 1)
def test_no_payload_over_the_bound_is_ever_queued_and_a_valid_mute_is_posted_at_once(
        name: str, size: int) -> None:
    p, mute = plugin()
    body = b'{"on": true}'
    payload = body + b" " * (size - len(body)) if size >= len(body) else b"x" * size
    p._on_message(Message(f"edge/{DEVICE}/cmd/{name}", payload))  # type: ignore[arg-type]
    items = drain(p)
    assert p.received == 1 and len(items) == 1
    queued_bytes = sum(len(part) for part in items[0] if isinstance(part, bytes))
    assert queued_bytes <= MAX_PAYLOAD
    if size > MAX_PAYLOAD:
        assert items[0][0] == "refused" and f"at most {MAX_PAYLOAD} bytes" in items[0][3]
        assert mute.posted == []
    elif name == "mute" and size >= len(body):
        assert mute.posted == [True] and items[0][0] == "mute"  # its answer, to come



def test_the_last_hours_false_count_remembers_a_bounded_number_of_activations() -> None:
    """A clock that stands still (or a soak faster than real time) puts every activation in the
    last hour: the window keeps the newest RECENT_MAX, so memory stays flat and the count
    saturates instead of growing."""
    from edge.mqtt.device import RECENT_MAX
    from edge.pipeline.events import ActivationEnded
    from edge.wake.policy import Detection, ScoreRun

    p, _ = plugin()
    clock = p.clock
    assert isinstance(clock, FakeClock)
    for i in range(RECENT_MAX + 50):
        det = Detection("hey_jarvis", 0.9, i, 3, 0.5)
        p.on_event(ActivationEnded(f"a{i:08d}", det, clock.wall(), None, "no_speech", 1.0,
                                   0.0, likely_false=True, run=ScoreRun("hey_jarvis", i, i, 0.9)))
    assert len(p._recent) == RECENT_MAX
    assert "a00000000" not in p._recent and f"a{RECENT_MAX + 49:08d}" in p._recent
    assert p.state()["false_per_hour"] == RECENT_MAX
