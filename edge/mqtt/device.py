"""The device on MQTT: status, state and activation events out; checked commands in.

``MqttPlugin`` is built by the composition root (edge.compose) with the collaborators
its commands need: the audio loop's command queue, the mute, the activation log, the
live purge. Threads and what they do:

- the bus thread (``events-mqtt``) turns events into ``state`` and ``event/activation``
  messages (metadata only: no audio is ever published here). What the state message
  says of the recorder (mode, thresholds, mute causes, the loop's real-time factor) is
  taken from those events alone;
- paho's network thread only queues what arrives (a retained command is dropped);
- the plugin's own worker checks each command and runs it: anything that touches the
  recorder runs on the audio loop (``Commands.call``), and the result is published once
  the loop has run it; a label is answered when the activation log has written it.

Commands (``cmd/<name>``, answered on ``cmd/<name>/result`` echoing ``tx``): ``label``,
``set_threshold`` (within ``mqtt.threshold_min`` .. ``threshold_max``), ``mute`` (the
soft mute; it never clears the hardware switch), ``stats``, and ``purge`` (twice: the
first answer holds a confirmation token). See ``edge.mqtt.command_payloads`` for the payloads.

Why one module of over 400 lines: the state the device publishes and the commands that
change it share one lock, one worker thread and one connection; what could stand apart
already does (payload checks in command_payloads, topics, messages, discovery).

>>> mqtt = MqttPlugin(cfg, clock, commands, thresholds={"hey_jarvis": 0.5},
...                   mute=hardware, labeler=activation_log)          # doctest: +SKIP
>>> bus.subscribe("mqtt", mqtt.on_event); mqtt.start()                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge import __version__
from edge.clock import Clock, iso
from edge.config import Config
from edge.errors import EdgeError
from edge.mqtt import command_payloads as commands
from edge.mqtt.client import MqttConnection, Will
from edge.mqtt.discovery import discovery_payload, discovery_topic
from edge.mqtt.messages import activation_message, encode, state_message
from edge.mqtt.topics import BrokerSettings, DeviceTopics
from edge.pipeline.events import (
    ActivationEnded,
    HardwareFault,
    LoopHealth,
    MuteChanged,
    State,
    StateChanged,
    ThresholdChanged,
)
from edge.pipeline.outcome import counts_as_false
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Commands, CommandTimeout
from edge.privacy import identity
from edge.privacy.retention import Removed

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessage

log = logging.getLogger(__name__)

AUDIO_LOOP_TIMEOUT_S = 3.0
"""How long a command waits for the audio loop to run it (it runs between frames)."""
PURGE_TOKEN_S = 60.0
PURGE_SCOPE = ("deleted every clip finished before the purge (one in its cancel window "
               "included), the upload queue and kept false-wake audio; a recording in "
               "progress is kept when it ends")
STALL_S = 3.0
"""No frame for this long while listening: the audio input is in trouble (mode error)."""
HOUR_S = 3600.0


RTF_SMOOTHING = 0.8
"""Weight of the previous real-time factor at each ``LoopHealth`` (about a second apart)."""


class CommandFailed(Exception):
    """A checked command that could not be carried out; the message says why."""


class MuteControl(Protocol):
    """The device's mute (edge.hardware): the soft mute only adds to the switch."""

    def set_soft_mute(self, on: bool, by: str, timeout: float
                      ) -> tuple[bool, tuple[str, ...]]: ...


class Labeler(Protocol):
    """The activation log: labels are written on its own thread."""

    def label(self, ref: str, label: str, source: str) -> Future[str]: ...


class Purger(Protocol):
    """Deletes the stored audio while the daemon runs (edge.upload.live_purge)."""

    def purge(self) -> list[Removed]: ...


StatsReport = Callable[[str | None], dict[str, Any]]
"""The activation log's statistics since a ``--since``-style time (None: all of it)."""


@dataclass
class _Recent:
    wall_time: float
    likely_false: bool
    label: str = "unknown"

    @property
    def false(self) -> bool:
        return counts_as_false(self.label, self.likely_false)


class MqttPlugin:
    """Publishes the device's state and events; runs commands from ``cmd/<name>``."""

    def __init__(self, cfg: Config, clock: Clock, commands: Commands, *,
                 thresholds: Mapping[str, float], mute: MuteControl,
                 device_id: str | None = None, settings: BrokerSettings | None = None,
                 labeler: Labeler | None = None, purger: Purger | None = None,
                 stats: StatsReport | None = None) -> None:
        self.cfg = cfg
        self.m = cfg.mqtt
        self.clock = clock
        self.commands = commands
        self.mute = mute
        self.labeler = labeler
        self.purger = purger
        self.stats = stats
        self.settings = settings or BrokerSettings.from_config(self.m)
        device_id = device_id or identity.device_id(cfg.state_path)
        self.topics = DeviceTopics(self.m.base_topic, device_id)
        self.conn: MqttConnection | None = None
        self.handled = 0
        self.refused = 0
        self.ignored_retained = 0
        self._q: queue.Queue[Any] = queue.Queue(maxsize=256)
        self._worker = threading.Thread(target=self._work, name="mqtt-commands", daemon=True)
        self._stop = threading.Event()
        self._start_mono = clock.monotonic()
        self._purge_token: tuple[str, float] | None = None
        # What the events said, written on the bus thread and read under the lock.
        self._lock = threading.Lock()
        self._mode = State.LISTENING.value
        self._mute_causes: tuple[str, ...] = ()
        self._fault: str | None = None
        self._thresholds: dict[str, float] = dict(thresholds)
        self._last: dict[str, Any] | None = None
        self._recent: dict[str, _Recent] = {}
        self._rtf: float | None = None
        self._alive_at: float | None = None
        """``time.monotonic()`` when the audio loop was last seen capturing."""

    def start(self) -> None:
        t = self.topics
        self.conn = MqttConnection(self.settings, f"edge-recorder-{t.device_id}",
                                   will=Will(t.status, "offline"),
                                   on_message=self._on_message, on_connect=self._on_connect)
        self.conn.subscribe(t.commands)
        if self.m.discovery:
            self.conn.subscribe(f"{self.m.discovery_prefix}/status")
        self._worker.start()
        self.conn.start()
        log.info("MQTT: publishing under %s/ on %s", t.root, self.settings.where)

    def close(self) -> None:
        self._stop.set()
        self._q.put(None)
        if self._worker.is_alive():
            self._worker.join(AUDIO_LOOP_TIMEOUT_S + 2.0)
        if self.conn is not None:
            self.conn.stop(final=[(self.topics.status, "offline", 1, True)])

    # ---- what the device says -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The state message as it would be published now."""
        now = self.clock.wall()
        with self._lock:
            mode, error = self._mode, self._fault
            quiet = (time.monotonic() - self._alive_at if self._alive_at is not None
                     and mode in ("listening", "recording") else 0.0)
            if error is None and quiet > STALL_S:
                error = f"no audio for {quiet:.0f} s"
            if error is not None:
                mode = "error"
            if mode not in ("listening", "recording", "muted", "error"):
                mode = "error"
                error = error or f"the recorder is {self._mode}"
            cutoff = now - HOUR_S
            self._recent = {k: r for k, r in self._recent.items() if r.wall_time >= cutoff}
            false_last_hour = sum(1 for r in self._recent.values() if r.false)
            return state_message(
                mode=mode, mute_causes=list(self._mute_causes), models=dict(self._thresholds),
                version=__version__, uptime_s=self.clock.monotonic() - self._start_mono,
                rtf=self._rtf, last_activation=self._last, false_per_hour=false_last_hour,
                wall_time=now, error=error)

    def publish_state(self) -> None:
        if self._mode == State.STOPPED.value:
            return  # shutting down: the retained state keeps the last real mode
        if self.conn is not None:
            self.conn.publish(self.topics.state, encode(self.state()), qos=1, retain=True)

    def _on_connect(self) -> None:
        """paho's thread, after each (re)connect: availability, discovery, state."""
        assert self.conn is not None
        self.conn.publish(self.topics.status, "online", qos=1, retain=True)
        self._announce()
        self.publish_state()

    def _announce(self) -> None:
        if self.m.discovery and self.conn is not None:
            self.conn.publish(discovery_topic(self.m.discovery_prefix, self.topics.device_id),
                              encode(discovery_payload(self.topics)), qos=1, retain=True)

    # ---- the bus thread ---------------------------------------------------------

    def on_event(self, ev: object) -> None:
        """The bus's subscriber: the device's state as the events tell it."""
        if isinstance(ev, LoopHealth):
            with self._lock:
                self._alive_at = ev.monotonic
                self._rtf = ev.rtf if self._rtf is None else \
                    RTF_SMOOTHING * self._rtf + (1 - RTF_SMOOTHING) * ev.rtf
            return  # about once a second: it changes no message by itself
        if isinstance(ev, StateChanged):
            with self._lock:
                self._mode = ev.new
                self._alive_at = time.monotonic()  # capture (re)starts now, or stops
        elif isinstance(ev, ActivationEnded):
            self._activation(ev)
        elif isinstance(ev, MuteChanged):
            with self._lock:
                self._mute_causes = tuple(ev.causes)
        elif isinstance(ev, HardwareFault):
            with self._lock:
                self._fault = f"{ev.key}: {ev.message}"
        elif isinstance(ev, ThresholdChanged):
            with self._lock:
                self._thresholds = dict(ev.thresholds)
        else:
            return
        self.publish_state()

    def _activation(self, ev: ActivationEnded) -> None:
        d = ev.detection
        msg = activation_message(
            activation_id=ev.activation_id, wall_time=ev.wall_time, model=d.model,
            score=d.score, threshold=d.threshold, reason=ev.reason, duration_s=ev.duration_s,
            likely_false=ev.likely_false, kept=ev.clip_id is not None)
        with self._lock:
            self._last = {"id": ev.activation_id, "time": iso(ev.wall_time),
                          "wall_time": round(ev.wall_time, 3), "model": d.model,
                          "score": round(float(d.score), 4)}
            self._recent[ev.activation_id] = _Recent(ev.wall_time, ev.likely_false)
        if self.conn is not None:
            self.conn.publish(self.topics.activation, encode(msg), qos=1, retain=False)

    # ---- paho's network thread: queue only --------------------------------------------

    def _on_message(self, msg: MQTTMessage) -> None:
        topic = str(msg.topic)
        if self.m.discovery and topic == f"{self.m.discovery_prefix}/status":
            if bytes(msg.payload).strip() == b"online":
                self._offer(("announce",))
            return
        if msg.retain:
            self.ignored_retained += 1
            log.warning("ignored a retained command on %s: commands must not be retained",
                        topic)
            return
        prefix = self.topics.root + "/cmd/"
        if topic.startswith(prefix):
            self._offer(("cmd", topic[len(prefix):], bytes(msg.payload)))

    def _offer(self, item: tuple[Any, ...]) -> None:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            log.warning("MQTT commands arrive faster than they run; dropped one")

    # ---- the worker: commands and the periodic state ------------------------------------

    def _work(self) -> None:
        next_state = time.monotonic() + self.m.state_interval_s
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=max(0.0, next_state - time.monotonic()))
            except queue.Empty:
                item = ("state",)
            if item is None:
                return
            try:
                if item[0] == "cmd":
                    self._command(item[1], item[2])
                elif item[0] == "announce":
                    self._announce()
                    self.publish_state()
                elif item[0] == "state":
                    self.publish_state()
            except Exception:
                log.exception("MQTT worker failed on %s", item[0])
            if time.monotonic() >= next_state:
                self.publish_state()
                next_state = time.monotonic() + self.m.state_interval_s

    def _command(self, name: str, payload: bytes) -> None:
        assert self.conn is not None
        answer_on = self.topics.result(commands.safe_name(name))
        try:
            cmd = commands.parse(name, payload)
        except commands.CommandError as exc:
            self.refused += 1
            log.warning("MQTT command %s refused: %s", commands.safe_name(name), exc)
            self.conn.publish(answer_on, commands.error(commands.safe_name(name), exc.tx,
                                                        str(exc)), qos=1)
            return
        handler: Callable[[dict[str, Any]], dict[str, Any] | Future[dict[str, Any]]] = \
            getattr(self, f"_cmd_{cmd.name}")
        try:
            data = handler(cmd.args)
        except (CommandFailed, EdgeError) as exc:
            self._answer(cmd, answer_on, error=exc)
            return
        if isinstance(data, Future):  # answered when done, on whichever thread finishes it
            data.add_done_callback(lambda done: self._answer_future(cmd, answer_on, done))
        else:
            self._answer(cmd, answer_on, data)

    def _answer_future(self, cmd: commands.Command, topic: str,
                       done: Future[dict[str, Any]]) -> None:
        try:
            data = done.result()
        except (CommandFailed, EdgeError) as exc:
            self._answer(cmd, topic, error=exc)
        except Exception as exc:
            log.exception("MQTT command %s failed", cmd.name)
            self._answer(cmd, topic, error=exc)
        else:
            self._answer(cmd, topic, data)

    def _answer(self, cmd: commands.Command, topic: str, data: dict[str, Any] | None = None,
                error: BaseException | None = None) -> None:
        assert self.conn is not None
        if error is not None:
            self.refused += 1
            log.warning("MQTT command %s failed: %s", cmd.name, error)
            self.conn.publish(topic, commands.error(cmd.name, cmd.tx, str(error)), qos=1)
            return
        self.handled += 1
        log.info("MQTT command %s done", cmd.name)
        self.conn.publish(topic, commands.result(cmd.name, cmd.tx, True, **(data or {})), qos=1)

    def _on_audio_thread(self, fn: Callable[[Recorder], Any]) -> Any:
        """Run ``fn(recorder)`` between frames and wait for it; its value or its error."""
        try:
            return self.commands.call(fn, AUDIO_LOOP_TIMEOUT_S)
        except CommandTimeout as exc:
            raise CommandFailed(str(exc)) from None
        except Exception as exc:
            raise CommandFailed(f"the command failed on the audio loop: {exc}") from None

    # -- label

    def _cmd_label(self, args: dict[str, Any]) -> Future[dict[str, Any]]:
        if self.labeler is None:
            raise CommandFailed("the activation log is off on this device "
                                "(activations.enabled = false); nothing to label")
        label = args["label"]
        written = self.labeler.label(args["activation"], label, args.get("source", "mqtt"))
        answer: Future[dict[str, Any]] = Future()

        def done(f: Future[str]) -> None:
            try:
                aid = f.result()
            except Exception as exc:
                answer.set_exception(exc)
                return
            with self._lock:
                if aid in self._recent:
                    self._recent[aid].label = label
            self.publish_state()
            answer.set_result({"activation": aid, "label": label})

        written.add_done_callback(done)
        return answer

    # -- set_threshold

    def _cmd_set_threshold(self, args: dict[str, Any]) -> dict[str, Any]:
        model, value = args["model"], args["threshold"]
        if model not in self._thresholds:
            raise CommandFailed(f"set_threshold: no model {model!r} on this device; it runs "
                                f"{', '.join(sorted(self._thresholds))}")
        lo, hi = self.m.threshold_min, self.m.threshold_max
        if not lo <= value <= hi:
            raise CommandFailed(f"set_threshold: threshold {value:g} is out of bounds; give "
                                f"{lo:g} to {hi:g} (mqtt.threshold_min/max)")
        old = self._thresholds[model]
        self._on_audio_thread(lambda rec: rec.set_threshold(model, value))
        log.info("threshold of %s set from %g to %g over MQTT", model, old, value)
        return {"model": model, "threshold": value, "previous": old}

    # -- mute

    def _cmd_mute(self, args: dict[str, Any]) -> dict[str, Any]:
        on: bool = args["on"]
        if not on and not self.m.allow_remote_unmute:
            raise CommandFailed("mute: a remote unmute is refused on this device "
                                "(mqtt.allow_remote_unmute = false); unmute at the device")
        try:
            muted, causes = self.mute.set_soft_mute(on, "mqtt", AUDIO_LOOP_TIMEOUT_S)
        except CommandTimeout as exc:
            raise CommandFailed(str(exc)) from None
        out: dict[str, Any] = {"soft_mute": on, "muted": muted, "mute_causes": list(causes)}
        if not on and muted:
            out["note"] = f"the soft mute is off, but the device stays muted by " \
                          f"{', '.join(c for c in causes if c != 'soft')}"
        return out

    # -- stats

    def _cmd_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        def snapshot(rec: Recorder) -> dict[str, Any]:
            s = rec.stats
            return {"frames": s.frames, "detections": s.detections,
                    "ignored_detections": s.ignored_detections, "clips": s.clips,
                    "discarded": s.discarded, "by_reason": dict(s.by_reason)}

        out: dict[str, Any] = {"state": self.state(), "recorder": self._on_audio_thread(snapshot),
                               "commands": {"handled": self.handled, "refused": self.refused,
                                            "ignored_retained": self.ignored_retained}}
        if self.stats is not None:
            out["activation_log"] = self.stats(args.get("since"))
        return out

    # -- purge

    def _cmd_purge(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.m.allow_purge:
            raise CommandFailed("purge is turned off on this device (mqtt.allow_purge = false)")
        given = args.get("confirm")
        now = time.monotonic()
        if given is None:
            token = secrets.token_hex(8)
            self._purge_token = (token, now + PURGE_TOKEN_S)
            return {"done": False, "confirm": token, "expires_in_s": PURGE_TOKEN_S,
                    "message": "this deletes every clip, the upload queue and kept "
                               "false-wake audio on the device; send cmd/purge again with "
                               f'{{"confirm": "{token}"}} within {PURGE_TOKEN_S:g} s'}
        held, self._purge_token = self._purge_token, None  # single use, right or wrong
        if held is None or now > held[1] or not secrets.compare_digest(given, held[0]):
            raise CommandFailed("purge: the confirmation token is wrong or expired; send "
                                "cmd/purge without one to get a new token")
        removed = self._purge()
        log.warning("purged over MQTT: %s", removed)
        return {"done": True, "removed": removed, "files": sum(removed.values()),
                "note": PURGE_SCOPE}

    def _purge(self) -> dict[str, int]:
        if self.purger is None:
            raise CommandFailed("purge: this device offers no live purge; stop the recorder "
                                "and run `edge purge --yes`")
        return {r.label: r.files for r in self.purger.purge()}
