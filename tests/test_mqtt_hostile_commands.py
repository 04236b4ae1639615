"""Commands a hostile broker account sends, against a live device on a real Mosquitto:
floods cannot delay a mute nor grow memory, and odd numbers and dates get a one-line answer.

The mute bound (edge.mqtt.device): a mute is honoured before the second frame read after
it arrives, i.e. within one frame, whatever else is queued. The test holds the audio loop
frame by frame (``GatedSource``), so it counts frames, never seconds.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.audio.frames import FRAME_SAMPLES
from edge.config.rules import THRESHOLD_FLOOR
from edge.pipeline.events import State
from tests.mqtt_helpers import Commander, DeviceRig, device_config
from tests.waiting import wait_for

DEVICE = "0123456789abcdef"
OVERSIZED = 4 * 1024 * 1024
MIB = 1024 * 1024


class GatedSource:
    """An audio source that gives a frame only when the test releases one: the audio loop
    waits in ``read`` in between, exactly as it waits on a microphone."""

    name = "gated test source"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._released = 0
        self._closed = False
        self.frames = 0
        self.reading = False
        """The loop is inside ``read``, waiting for a frame."""
        self.capturing = False

    def start(self) -> None:
        with self._cond:
            self.capturing = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.capturing = False
            self._cond.notify_all()

    def read(self) -> np.ndarray | None:
        with self._cond:
            self.reading = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._closed or self._released > self.frames)
            self.reading = False
            if self._closed:
                return None
            self.frames += 1
            self._cond.notify_all()
            return np.zeros(FRAME_SAMPLES, np.int16)

    def release(self, n: int = 1) -> None:
        with self._cond:
            self._released += n
            self._cond.notify_all()

    def wait_idle(self, what: str) -> None:
        """Until every released frame is read and the loop waits again, or capture stopped."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._released == self.frames
                                     and (self.reading or not self.capturing), 30.0)
        assert ok, f"the audio loop did not come back to read: {what}"

    def end(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def close(self) -> None:
        self.end()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def commander(mqtt_broker: Any) -> Any:
    """A commander that hears only results: its own 4 MiB payloads must not come back to
    this process (the device shares it, and its memory is measured)."""
    c = Commander(mqtt_broker)
    subscribed = threading.Event()
    c.client.on_subscribe = lambda *a: subscribed.set()
    c.client.subscribe("edge/+/cmd/+/result", qos=1)
    assert subscribed.wait(10.0)
    subscribed.clear()
    c.client.on_unsubscribe = lambda *a: subscribed.set()
    c.client.unsubscribe("edge/#")
    assert subscribed.wait(10.0)
    yield c
    c.close()


@pytest.fixture
def gated(tmp_path: Any, mqtt_broker: Any) -> Any:
    source = GatedSource()
    rig = DeviceRig(device_config(tmp_path / "state", mqtt_broker), source, device_id=DEVICE)
    source.release(3)  # the loop is up and listening
    source.wait_idle("at start")
    yield rig, source
    rig.stop()


def results_for(commander: Commander, name: str) -> list[dict[str, Any]]:
    with commander._cond:
        return [r for topic, r in commander.results if topic.endswith(f"/cmd/{name}/result")]


def test_a_mute_overtakes_a_flood_of_labels_and_oversized_payloads_within_one_frame(
        gated: Any, commander: Commander) -> None:
    rig, source = gated
    recorder = rig.daemon.recorder
    # The worker is busy: a stats command waits for the audio loop, which waits for a frame.
    commander.send(DEVICE, "stats", {"tx": "busy"})
    blob = b"x" * OVERSIZED
    commander.send(DEVICE, "label", blob)  # one first, so the RSS baseline has paid for it
    wait_for(lambda: rig.mqtt.received == 2, 30.0, "the first two commands to arrive")
    baseline = rss_bytes()

    for i in range(50):  # activations that do not exist: numbers and whole ids
        ref = str(900000 + i) if i % 2 else str(uuid.uuid4())
        commander.send(DEVICE, "label", {"activation": ref, "label": "false"})
    for _ in range(20):
        commander.send(DEVICE, "label", blob)
    commander.send(DEVICE, "mute", {"on": True, "tx": "m1"})
    wait_for(lambda: rig.mqtt.received == 73, 60.0, "the flood and the mute to arrive")
    assert source.reading and recorder.state is State.LISTENING
    arrived_at = source.frames
    growth = rss_bytes() - baseline

    source.release(1)  # the frame the loop was waiting for when the mute arrived
    source.wait_idle("after the mute")
    assert recorder.state is State.MUTED and not source.capturing, \
        f"still {recorder.state.value} after {source.frames - arrived_at} frame(s)"
    assert source.frames - arrived_at == 1
    # 20 payloads of 4 MiB were refused unread: none of them is held in memory
    # (12 MiB here, paho's buffers; 92 MiB when they were queued)
    assert growth < 20 * OVERSIZED // 2, f"RSS grew {growth / MIB:.0f} MiB during the flood"

    answer = commander.wait_result(lambda r: r.get("tx") == "m1", 30.0)
    assert answer["ok"] and answer["muted"] and "soft" in answer["mute_causes"]
    commander.wait_for(lambda: len(results_for(commander, "label")) == 71, 60.0,
                       "every label answered")
    labels = results_for(commander, "label")
    too_big = [r for r in labels if "bytes" in r.get("error", "")]
    assert len(too_big) == 21 and all(not r["ok"] for r in labels)
    assert all(f"at most {4096} bytes" in r["error"] for r in too_big)
    assert rig.mqtt.dropped == 0


def test_set_threshold_never_goes_below_the_floor_even_when_the_config_allows_it(
        tmp_path: Any, mqtt_broker: Any, commander: Commander) -> None:
    # mqtt.threshold_min = 0 cannot be loaded from a file; built in code it still cannot
    # lower a threshold under the floor
    source = GatedSource()
    rig = DeviceRig(device_config(tmp_path / "state", mqtt_broker, threshold_min=0.0),
                    source, device_id=DEVICE)
    try:
        source.release(10**9)
        for value in (0, 0.0, 0.05, THRESHOLD_FLOOR / 2, 1e-300, -1):
            r = commander.call(DEVICE, "set_threshold", {"model": "hey_jarvis",
                                                          "threshold": value})
            assert not r["ok"] and f"{THRESHOLD_FLOOR:g} is the threshold floor" in r["error"]
        assert rig.daemon.recorder.policy.thresholds == {"hey_jarvis": 0.5}
        r = commander.call(DEVICE, "set_threshold", {"model": "hey_jarvis",
                                                      "threshold": THRESHOLD_FLOOR})
        assert r["ok"] and rig.daemon.recorder.policy.thresholds["hey_jarvis"] == 0.1
    finally:
        rig.stop()


@pytest.mark.parametrize("name, payload, expected", [
    ("set_threshold", b'{"model": "hey_jarvis", "threshold": ' + b"9" * 400 + b"}",
     "must be a finite number"),
    ("set_threshold", b'{"model": "hey_jarvis", "threshold": -' + b"9" * 400 + b"}",
     "must be a finite number"),
    ("stats", b'{"since": "999999999d"}', "since '999999999d' is outside 1970 to 9999"),
    ("stats", b'{"since": "0001-01-01"}', "since '0001-01-01' is outside 1970 to 9999"),
    ("label", '{"activation": "\u00b2", "label": "false"}'.encode(), "is not allowed"),
    ("label", '{"activation": "\u0661\u0662", "label": "false"}'.encode(), "is not allowed"),
])
def test_numbers_and_dates_a_device_cannot_use_get_a_one_line_answer(
        gated: Any, commander: Commander, name: str, payload: bytes, expected: str) -> None:
    rig, source = gated
    source.release(10**9)
    tx = uuid.uuid4().hex[:12]
    body = payload[:-1] + f', "tx": "{tx}"}}'.encode()
    commander.send(DEVICE, name, body)
    r = commander.wait_result(lambda r: r.get("tx") == tx, 20.0)
    assert not r["ok"] and expected in r["error"] and "\n" not in r["error"]
    assert rig.daemon.recorder.policy.thresholds == {"hey_jarvis": 0.5}
