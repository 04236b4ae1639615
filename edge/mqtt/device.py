"""The device on MQTT: status, state and activation events out; checked commands in.

``MqttPlugin`` is built by the composition root (edge.compose) with the collaborators
its commands need: the audio loop's command queue, the mute, the activation log, the
live purge. Threads and what they do:

- the bus thread (``events-mqtt``) turns events into ``state`` and ``event/activation``
  messages (metadata only: no audio is ever published here). What the state message
  says of the recorder (mode, thresholds, mute causes, the loop's real-time factor) is
  taken from those events alone;
- paho's network thread only queues what arrives (a retained command is dropped), after
  refusing a payload over ``MAX_PAYLOAD`` bytes unread; a mute it posts straight to the
  audio loop, so **a mute is honoured before the second frame after its arrival (within
  one 80 ms frame), whatever else is queued**;
- the plugin's own worker checks each command and runs it, taking mute answers and purges
  first (``edge.mqtt.lanes``): anything that touches the recorder runs on the audio loop
  (``Commands.call``), and the result is published once the loop has run it; a label never
  holds the worker up: it is answered when the activation log has written it.

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
from edge.config.rules import THRESHOLD_FLOOR, threshold_refusal
from edge.errors import EdgeError
from edge.mqtt import command_payloads as commands
from edge.mqtt.client import MqttConnection, Will
from edge.mqtt.discovery import discovery_payload, discovery_topic
from edge.mqtt.lanes import Lanes
from edge.mqtt.messages import activation_message, encode, state_message, transcript_message
from edge.mqtt.topics import BrokerSettings, DeviceTopics
from edge.pipeline.events import (
    ActivationEnded,
    HardwareFault,
    LoopHealth,
    MuteChanged,
    State,
    StateChanged,
    ThresholdChanged,
    TranscriptReady,
)
from edge.pipeline.outcome import counts_as_false
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Commands, CommandTimeout, wait_for_loop
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
REMOTE_UNMUTE_REFUSED = ("mute: a remote unmute is refused on this device "
                         "(mqtt.allow_remote_unmute = false); unmute at the device")
STALL_S = 3.0
"""No frame for this long while listening: the audio input is in trouble (mode error)."""
HOUR_S = 3600.0
RECENT_MAX = 3600
"""At most this many activations are remembered for the last hour's false count (one a second
for an hour: a device past that is broken, and its count reads 3600), so that a clock that
stands still, or a soak faster than real time, cannot grow the window without bound."""


LABELS_IN_FLIGHT = 64
"""Labels sent to the activation log and not yet answered; more are refused, not queued."""

RTF_SMOOTHING = 0.8
"""Weight of the previous real-time factor at each ``LoopHealth`` (about a second apart)."""


class CommandFailed(Exception):
    """A checked command that could not be carried out; the message says why."""


class MuteControl(Protocol):
    """The device's mute (edge.hardware): the soft mute only adds to the switch."""

    def soft_mute_soon(self, on: bool, by: str) -> Future[tuple[bool, tuple[str, ...]]]:
        """Post the soft mute (or unmute) to the audio loop now, without waiting: a future
        of whether the device is muted then, and what holds it."""
        ...


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
        self.received = 0
        """Command messages that reached the device (paho's thread counts them)."""
        self.dropped = 0
        """Commands dropped unanswered because the worker's inbox was full."""
        self._labels_in_flight = 0
        self._q = Lanes()
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
        self._q.close()
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
                wall_time=now, error=error, name=self.m.name)

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
                              encode(discovery_payload(self.topics, self.m.name)),
                              qos=1, retain=True)

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
        elif isinstance(ev, TranscriptReady):
            self._transcript(ev)
            return
        else:
            return
        self.publish_state()

    def _transcript(self, ev: TranscriptReady) -> None:
        """The person's words leave on MQTT only where the owner opted in."""
        if not self.cfg.assist.stt.publish_transcripts or self.conn is None:
            return
        msg = transcript_message(activation_id=ev.activation_id, wall_time=self.clock.wall(),
                                 model=ev.wake_word, seconds=ev.seconds, text=ev.text)
        self.conn.publish(self.topics.transcript, encode(msg), qos=1, retain=False)

    def _activation(self, ev: ActivationEnded) -> None:
        d = ev.detection
        msg = activation_message(
            activation_id=ev.activation_id, wall_time=ev.wall_time, model=d.model,
            score=ev.peak, threshold=d.threshold, reason=ev.reason, duration_s=ev.duration_s,
            likely_false=ev.likely_false, kept=ev.clip_id is not None)
        with self._lock:
            self._last = {"id": ev.activation_id, "time": iso(ev.wall_time),
                          "wall_time": round(ev.wall_time, 3), "model": d.model,
                          "score": msg["score"]}
            self._recent[ev.activation_id] = _Recent(ev.wall_time, ev.likely_false)
            if len(self._recent) > RECENT_MAX:  # oldest first: events arrive in time order
                del self._recent[next(iter(self._recent))]
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
        if not topic.startswith(prefix):
            return
        name, size = topic[len(prefix):], len(msg.payload)
        if size > commands.MAX_PAYLOAD:  # refused unread: nothing that size is kept or queued
            self._offer(("refused", name, None, f"payload is {size} bytes; a command is a "
                         f"JSON object of at most {commands.MAX_PAYLOAD} bytes"))
        elif name == "mute":
            self._mute_now(bytes(msg.payload))
        else:
            self._offer(("cmd", name, bytes(msg.payload)), fast=name == "purge")
        self.received += 1  # counted once handled: a mute is on the audio loop's queue by now

    def _mute_now(self, payload: bytes) -> None:
        """A mute, on paho's thread: posted to the audio loop before anything queued runs,
        without waiting for it; the worker answers when the loop has run it."""
        try:
            cmd = commands.parse("mute", payload)
        except commands.CommandError as exc:
            self._offer(("refused", "mute", exc.tx, str(exc)), fast=True)
            return
        if not cmd.args["on"] and not self.m.allow_remote_unmute:
            self._offer(("refused", "mute", cmd.tx, REMOTE_UNMUTE_REFUSED), fast=True)
            return
        self._offer(("mute", cmd, self.mute.soft_mute_soon(cmd.args["on"], "mqtt")), fast=True)

    def _offer(self, item: tuple[Any, ...], fast: bool = False) -> None:
        if not self._q.put(item, fast=fast):
            self.dropped += 1
            log.warning("MQTT commands arrive faster than they run; dropped a %s", item[0])

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
                elif item[0] == "mute":
                    self._answer_mute(item[1], item[2])
                elif item[0] == "refused":
                    self._refuse(item[1], item[2], item[3])
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
            self._refuse(name, exc.tx, str(exc))
            return
        handler: Callable[[dict[str, Any]], dict[str, Any] | Future[dict[str, Any]]] = \
            getattr(self, f"_cmd_{cmd.name}")
        try:
            data = handler(cmd.args)
        except (CommandFailed, EdgeError) as exc:
            self._answer(cmd, answer_on, error=exc)
            return
        except Exception as exc:  # a bug, not the sender's fault: still one answer
            log.exception("MQTT command %s failed", cmd.name)
            self._answer(cmd, answer_on, error=CommandFailed(f"{cmd.name} failed on the "
                                                             f"device: {exc}"))
            return
        if isinstance(data, Future):  # answered when done, on whichever thread finishes it
            data.add_done_callback(lambda done: self._answer_future(cmd, answer_on, done))
        else:
            self._answer(cmd, answer_on, data)

    def _refuse(self, name: str, tx: str | None, message: str) -> None:
        """A command refused before it ran: counted, logged, answered."""
        assert self.conn is not None
        self.refused += 1
        shown = commands.safe_name(name)
        log.warning("MQTT command %s refused: %s", shown, message)
        self.conn.publish(self.topics.result(shown), commands.error(shown, tx, message), qos=1)

    def _answer_mute(self, cmd: commands.Command,
                     done: Future[tuple[bool, tuple[str, ...]]]) -> None:
        """Answer a mute the audio loop was given as it arrived (``_mute_now``)."""
        topic = self.topics.result("mute")
        try:
            muted, causes = wait_for_loop(done, AUDIO_LOOP_TIMEOUT_S)
        except Exception as exc:
            self._answer(cmd, topic, error=exc)
            return
        on: bool = cmd.args["on"]
        out: dict[str, Any] = {"soft_mute": on, "muted": muted, "mute_causes": list(causes)}
        if not on and muted:
            out["note"] = f"the soft mute is off, but the device stays muted by " \
                          f"{', '.join(c for c in causes if c != 'soft')}"
        self._answer(cmd, topic, out)

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
        with self._lock:
            if self._labels_in_flight >= LABELS_IN_FLIGHT:
                raise CommandFailed(f"label: {LABELS_IN_FLIGHT} labels are still being "
                                    "written; send this one again in a moment")
            self._labels_in_flight += 1
        try:
            written = self.labeler.label(args["activation"], label, args.get("source", "mqtt"))
        except BaseException:
            with self._lock:
                self._labels_in_flight -= 1
            raise
        answer: Future[dict[str, Any]] = Future()

        def done(f: Future[str]) -> None:
            with self._lock:
                self._labels_in_flight -= 1
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
        lo, hi = max(self.m.threshold_min, THRESHOLD_FLOOR), self.m.threshold_max
        refusal = threshold_refusal(value, "set_threshold: threshold", hi)
        if refusal or value < lo:
            raise CommandFailed(refusal or f"set_threshold: threshold {value:g} is out of "
                                f"bounds; give {lo:g} to {hi:g} (mqtt.threshold_min/max)")
        old = self._thresholds[model]
        self._on_audio_thread(lambda rec: rec.set_threshold(model, value))
        log.info("threshold of %s set from %g to %g over MQTT", model, old, value)
        return {"model": model, "threshold": value, "previous": old}

    # -- mute: run as it arrives, on paho's thread (_mute_now), answered by _answer_mute

    # -- stats

    def _cmd_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        def snapshot(rec: Recorder) -> dict[str, Any]:
            s = rec.stats
            return {"frames": s.frames, "detections": s.detections,
                    "ignored_detections": s.ignored_detections, "clips": s.clips,
                    "discarded": s.discarded, "by_reason": dict(s.by_reason)}

        out: dict[str, Any] = {"state": self.state(), "recorder": self._on_audio_thread(snapshot),
                               "commands": {"handled": self.handled, "refused": self.refused,
                                            "ignored_retained": self.ignored_retained,
                                            "dropped": self.dropped}}
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
