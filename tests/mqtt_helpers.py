"""Helpers for the MQTT and dashboard tests: a live daemon with the real models on a real
broker, a source that keeps it running, and a client that sends commands and reads results."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from edge.config import ActivationsConfig, Config, MqttConfig, OutputConfig, replace
from tests.fixtures.audio import phrase
from tests.waiting import wait_for

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
DEVICE = "0123456789abcdef"
"""The device id the MQTT tests' devices run as."""
ROOT = f"edge/{DEVICE}"
"""Its topics' root."""


def wake_and_request() -> np.ndarray:
    """Half a second of silence, "hey jarvis", a request, then a second and a half of quiet."""
    gap = np.zeros(4000, np.int16)
    return np.concatenate([np.zeros(8000, np.int16), phrase("hey jarvis"), gap,
                           phrase("what is the weather like today"), np.zeros(24000, np.int16)])


class LiveSource:
    """Plays ``samples`` (then silence) for as long as the test wants, ``speed`` times
    faster than real time; ``play`` queues more audio. Never ends by itself."""

    name = "live test source"

    def __init__(self, samples: np.ndarray | None = None, speed: float = 4.0) -> None:
        self._pending: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.speed = speed
        self.frames = 0
        if samples is not None:
            self.play(samples)

    def play(self, samples: np.ndarray) -> None:
        n = -(-len(samples) // FRAME_SAMPLES) * FRAME_SAMPLES
        padded = np.zeros(n, np.int16)
        padded[: len(samples)] = samples
        with self._lock:
            self._pending.extend(padded.reshape(-1, FRAME_SAMPLES))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        if self._closed.wait(FRAME_S / self.speed):
            return None
        self.frames += 1
        with self._lock:
            if self._pending:
                return self._pending.pop(0)
        return np.zeros(FRAME_SAMPLES, np.int16)

    def end(self) -> None:
        self._closed.set()

    def close(self) -> None:
        self._closed.set()


def device_config(state: Path, broker: Any, **mqtt: Any) -> Config:
    return replace(Config(), state_dir=str(state),
                   output=OutputConfig(keep_local=True),
                   activations=ActivationsConfig(checkpoint_s=0.0),
                   mqtt=MqttConfig(enabled=True, host=broker.host, port=broker.port, tls=False,
                                   **mqtt))


class DeviceRig:
    """A running daemon (real models) built as ``edge run`` builds it, with MQTT on."""

    def __init__(self, cfg: Config, source: LiveSource, device_id: str = "0123456789abcdef",
                 **seams: Any) -> None:
        from edge.compose.daemon import build_device
        from tests.device import device_seams

        self.cfg = cfg
        self.source = source
        self.device = build_device(cfg, source, device_seams(device_id=device_id, **seams))
        assert self.device.mqtt is not None, "mqtt.enabled must be true"
        self.mqtt = self.device.mqtt
        self.daemon = self.device.daemon
        self.thread = threading.Thread(target=self.daemon.run, kwargs={"install_signals": False},
                                       name="test-daemon", daemon=True)
        self.thread.start()
        assert self.mqtt.conn is not None
        assert self.mqtt.conn.wait_connected(10.0), "the device did not connect to the broker"

    @property
    def device_id(self) -> str:
        assert self.mqtt.topics is not None
        return self.mqtt.topics.device_id

    def stop(self) -> None:
        self.source.end()
        self.daemon.stop()
        self.thread.join(30.0)


class Commander:
    """Sends commands to a device and waits for their results."""

    def __init__(self, broker: Any, base: str = "edge") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.base = base
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{base}/#", qos=1)
        assert subscribed.wait(10.0)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            if msg.topic.endswith("/result"):
                self.results.append((msg.topic, json.loads(msg.payload)))
            self._cond.notify_all()

    def send(self, device: str, name: str, payload: bytes | str | dict[str, Any],
             retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(f"{self.base}/{device}/cmd/{name}", payload, qos=1,
                            retain=retain).wait_for_publish(5.0)

    def call(self, device: str, name: str, args: dict[str, Any] | None = None,
             timeout: float = 10.0) -> dict[str, Any]:
        """Send with a fresh tx and return the result that echoes it."""
        tx = uuid.uuid4().hex[:12]
        self.send(device, name, {**(args or {}), "tx": tx})
        return self.wait_result(lambda r: r.get("tx") == tx, timeout)

    def wait_result(self, match: Callable[[dict[str, Any]], bool],
                    timeout: float = 10.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((r for _topic, r in self.results if match(r)), None)

        try:
            return wait_for(found, timeout, "a matching command result", notified=self._cond)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; results so far: {self.results}") from None

    def latest(self, topic: str) -> dict[str, Any] | None:
        with self._cond:
            for t, payload, _r in reversed(self.messages):
                if t == topic:
                    return dict(json.loads(payload))
        return None

    def wait_for(self, cond: Callable[[], Any], timeout: float = 15.0,
                 what: str = "the condition") -> Any:
        return wait_for(cond, timeout, what)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
