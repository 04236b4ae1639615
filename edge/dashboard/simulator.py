"""A fleet simulator: N devices, each its own MQTT connection, publishing the real formats.

Every simulated device connects with the device's last will, has a friendly name
("kitchen 1", "hallway 2", ...), says ``"simulated": true`` in its state (the dashboard
marks it, and lets the tester remove it), publishes ``status``,
a retained ``state`` every ``state_interval_s`` (jittered), activation events at
``activations_per_hour`` (Poisson), and answers ``cmd/label`` like a device does. With
``burst_every_s``, a share of the fleet wakes at once (a wake word on television).
The messages come from ``edge.mqtt.messages``, the very functions the device uses.

One thread drives every connection through paho's external-loop API (``loop_read``,
``loop_write``, ``loop_misc``) and a selector, so 1,000 devices cost one thread.

>>> sim = FleetSimulator(broker_from_url("mqtt://localhost"), FleetProfile(devices=50))
>>> sim.connect(); sim.run(60.0); sim.close()        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import random
import selectors
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.errors import EdgeError
from edge.mqtt import command_payloads as commands
from edge.mqtt.client import Will, new_client
from edge.mqtt.messages import activation_message, encode, state_message
from edge.mqtt.topics import BrokerSettings, DeviceTopics

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

REASONS_TRUE = ("silence", "silence", "silence", "max_length")
REASONS_FALSE = ("no_speech", "no_speech", "cancelled_by_user")
ROOMS = ("kitchen", "living room", "hallway", "bedroom", "office", "garage", "porch",
         "attic", "cellar", "study")


def sim_name(i: int) -> str:
    """The friendly name of simulated device ``i`` (0-based).

    >>> sim_name(0), sim_name(11)
    ('kitchen 1', 'living room 2')
    """
    return f"{ROOMS[i % len(ROOMS)]} {i // len(ROOMS) + 1}"


@dataclass(frozen=True)
class FleetProfile:
    devices: int = 100
    state_interval_s: float = 60.0
    activations_per_hour: float = 1.0
    """Per device."""
    false_fraction: float = 0.3
    """Share of activations that are likely-false (no speech followed)."""
    burst_every_s: float = 0.0
    """0: no bursts."""
    burst_fraction: float = 0.2
    models: tuple[str, ...] = ("hey_jarvis",)
    backfill_hours: float = 0.0
    """At start, each device reports activations of this many past hours (at up to 2 per
    hour), as a device does that comes back with its events queued: the history fills."""


@dataclass
class SimDevice:
    id: str
    name: str
    topics: DeviceTopics
    client: Client
    thresholds: dict[str, float]
    started: float
    connected: bool = False
    last: dict[str, Any] | None = None
    recent: list[tuple[float, bool]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class SimCounters:
    status: int = 0
    state: int = 0
    activations: int = 0
    results: int = 0

    @property
    def total(self) -> int:
        return self.status + self.state + self.activations + self.results


class FleetSimulator:
    def __init__(self, settings: BrokerSettings, profile: FleetProfile, base: str = "edge",
                 seed: int = 0, clock: Callable[[], float] = time.time,
                 on_publish: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.base = base
        self.rng = random.Random(seed)
        self.clock = clock
        self.on_publish = on_publish
        self.counters = SimCounters()
        self.devices: list[SimDevice] = []
        self._sel = selectors.DefaultSelector()
        self._heap: list[tuple[float, int, str]] = []
        self._dirty: set[int] = set()
        self._stop = threading.Event()

    # ---- connecting -------------------------------------------------------------------

    def connect(self, timeout: float = 60.0) -> None:
        """Connect every device (a few at a time, as a real fleet would not all at once)."""
        now = self.clock()
        for i in range(self.profile.devices):
            did = f"sim{self.rng.getrandbits(52):013x}"
            topics = DeviceTopics(self.base, did)
            client = new_client(self.settings, f"edge-sim-{did}", Will(topics.status, "offline"))
            dev = SimDevice(did, sim_name(i), topics, client,
                            {m: 0.5 for m in self.profile.models}, now)
            client.user_data_set(i)
            client.on_connect = self._on_connect
            client.on_message = self._on_message
            try:
                client.connect(self.settings.host, self.settings.port,
                               keepalive=self.settings.keepalive_s)
            except OSError as exc:
                raise EdgeError(f"simulated device {i} cannot reach {self.settings.where} "
                                f"({exc})") from None
            self.devices.append(dev)
            self._sel.register(client.socket(), selectors.EVENT_READ, i)
            self._dirty.add(i)
            if i % 50 == 49:
                self._pump(0.0)
        deadline = time.monotonic() + timeout
        while not all(d.connected for d in self.devices):
            if time.monotonic() > deadline:
                n = sum(d.connected for d in self.devices)
                raise EdgeError(f"only {n} of {len(self.devices)} simulated devices connected "
                                f"to {self.settings.where} within {timeout:g} s")
            self._pump(0.05)
        if self.profile.backfill_hours > 0:
            self._backfill(self.clock())
        self._schedule_all(self.clock())

    def _backfill(self, now: float) -> None:
        rate = min(self.profile.activations_per_hour, 2.0) / 3600.0
        for i in range(len(self.devices)):
            t = now - self.profile.backfill_hours * 3600.0
            while rate > 0:
                t += self.rng.expovariate(rate)
                if t >= now:
                    break
                self._activate(i, t)
            self._pump(0.0)

    def _on_connect(self, client: Client, i: int, _f: ConnectFlags, reason: ReasonCode,
                    _p: Properties | None) -> None:
        if reason.is_failure:
            log.error("simulated device %d was refused: %s", i, reason)
            return
        dev = self.devices[i]
        dev.connected = True
        client.subscribe(dev.topics.commands, qos=1)
        self._publish(i, dev.topics.status, "online", 1, True, "status")
        self._publish_state(i)

    # ---- what a device does ---------------------------------------------------------------

    def _schedule_all(self, now: float) -> None:
        p = self.profile
        for i in range(len(self.devices)):
            heapq.heappush(self._heap, (now + self.rng.uniform(0, p.state_interval_s), i,
                                        "state"))
            self._schedule_activation(i, now)
        if p.burst_every_s > 0:
            heapq.heappush(self._heap, (now + p.burst_every_s, -1, "burst"))

    def _schedule_activation(self, i: int, now: float) -> None:
        rate = self.profile.activations_per_hour / 3600.0
        if rate > 0:
            heapq.heappush(self._heap, (now + self.rng.expovariate(rate), i, "activation"))

    def _false_last_hour(self, dev: SimDevice, now: float) -> int:
        dev.recent = [(t, f) for t, f in dev.recent if t >= now - 3600]
        return sum(1 for _t, f in dev.recent if f)

    def _publish_state(self, i: int) -> None:
        dev = self.devices[i]
        now = self.clock()
        msg = state_message(mode="listening", mute_causes=[], models=dev.thresholds,
                            version=__version__, uptime_s=now - dev.started,
                            rtf=round(self.rng.uniform(0.08, 0.2), 4), last_activation=dev.last,
                            false_per_hour=self._false_last_hour(dev, now), wall_time=now,
                            name=dev.name, simulated=True)
        self._publish(i, dev.topics.state, encode(msg), 1, True, "state")

    def _activate(self, i: int, at: float | None = None) -> None:
        dev = self.devices[i]
        now = self.clock() if at is None else at
        likely_false = self.rng.random() < self.profile.false_fraction
        reasons = REASONS_FALSE if likely_false else REASONS_TRUE
        reason = self.rng.choice(reasons)
        model = self.rng.choice(self.profile.models)
        score = round(self.rng.uniform(0.5, 0.99), 4)
        aid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        msg = activation_message(activation_id=aid, wall_time=now, model=model, score=score,
                                 threshold=dev.thresholds[model], reason=reason,
                                 duration_s=round(self.rng.uniform(1.5, 8.0), 2),
                                 likely_false=likely_false, kept=reason != "no_speech")
        dev.last = {"id": aid, "time": msg["time"], "wall_time": msg["wall_time"],
                    "model": model, "score": score}
        dev.recent.append((now, likely_false))
        self._publish(i, dev.topics.activation, encode(msg), 1, False, "activations")
        if at is None:
            self._publish_state(i)

    def _on_message(self, client: Client, i: int, msg: MQTTMessage) -> None:
        """A command to a simulated device: checked and answered like the real one."""
        dev = self.devices[i]
        if msg.retain:
            return
        name = str(msg.topic).rsplit("/", 1)[-1]
        try:
            cmd = commands.parse(name, bytes(msg.payload))
        except commands.CommandError as exc:
            out = commands.error(commands.safe_name(name), exc.tx, str(exc))
        else:
            if cmd.name == "label":
                ref = cmd.args["activation"]
                aid = dev.last["id"] if ref == "last" and dev.last else ref
                dev.labels[aid] = cmd.args["label"]
                out = commands.result("label", cmd.tx, True, activation=aid,
                                      label=cmd.args["label"])
            else:
                out = commands.error(cmd.name, cmd.tx, f"{cmd.name}: a simulated device "
                                                       "only answers label")
        self._publish(i, dev.topics.result(commands.safe_name(name)), out, 1, False,
                      "results")

    def _publish(self, i: int, topic: str, payload: str, qos: int, retain: bool,
                 kind: str) -> None:
        self.devices[i].client.publish(topic, payload, qos=qos, retain=retain)
        setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        self._dirty.add(i)
        if self.on_publish is not None:
            self.on_publish(kind, topic, {"payload": payload})

    # ---- the loop -----------------------------------------------------------------------

    def run(self, duration_s: float) -> SimCounters:
        """Publish for ``duration_s`` seconds (or until ``stop``)."""
        end = time.monotonic() + duration_s
        next_misc = time.monotonic() + 1.0
        while not self._stop.is_set() and time.monotonic() < end:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                _t, i, kind = heapq.heappop(self._heap)
                if kind == "state":
                    self._publish_state(i)
                    heapq.heappush(self._heap, (now + self.profile.state_interval_s *
                                                self.rng.uniform(0.9, 1.1), i, "state"))
                elif kind == "activation":
                    self._activate(i)
                    self._schedule_activation(i, now)
                elif kind == "burst":
                    k = max(1, round(len(self.devices) * self.profile.burst_fraction))
                    for j in self.rng.sample(range(len(self.devices)), k):
                        self._activate(j)
                    heapq.heappush(self._heap, (now + self.profile.burst_every_s, -1, "burst"))
            wait = 0.05 if not self._heap else min(0.05, max(0.0, self._heap[0][0] - now))
            self._pump(wait)
            if time.monotonic() >= next_misc:
                for d in self.devices:
                    d.client.loop_misc()
                next_misc = time.monotonic() + 1.0
        return self.counters

    def _pump(self, timeout: float) -> None:
        for key, _ev in self._sel.select(timeout):
            i = key.data
            self.devices[i].client.loop_read()
            self._dirty.add(i)
        dirty, self._dirty = self._dirty, set()
        for i in dirty:
            c = self.devices[i].client
            if c.want_write():
                c.loop_write()
                if c.want_write():
                    self._dirty.add(i)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Go offline cleanly: a retained ``offline`` from each device, then disconnect."""
        for i, d in enumerate(self.devices):
            if d.connected:
                self._publish(i, d.topics.status, "offline", 1, True, "status")
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(
                d.client.want_write() for d in self.devices):
            self._pump(0.02)
        for d in self.devices:
            d.client.disconnect()
            d.client.loop_write()
        self._pump(0.1)
        for d in self.devices:
            sock = d.client.socket()  # None once paho has closed it
            with contextlib.suppress(KeyError, ValueError):
                if sock is not None:
                    self._sel.unregister(sock)
        self._sel.close()
