"""The device on MQTT: status, state and activation events out; checked commands in.

``MqttPlugin`` attaches to the daemon like any subsystem. Threads and what they do:

- the bus thread (``events-mqtt``) turns recorder events into ``state`` and
  ``event/activation`` messages (metadata only: no audio is ever published here);
- paho's network thread only queues what arrives (a retained command is dropped);
- the plugin's own worker checks each command and runs it: anything that touches the
  recorder is posted to the audio loop (``daemon.post``), and the result is published
  once the loop has run it.

Commands (``cmd/<name>``, answered on ``cmd/<name>/result`` echoing ``tx``): ``label``,
``set_threshold`` (within ``mqtt.threshold_min`` .. ``threshold_max``), ``mute`` (the
soft mute; it never clears the hardware switch), ``stats``, and ``purge`` (twice: the
first answer holds a confirmation token). See ``edge.mqtt.commands`` for the payloads.

>>> daemon = Daemon(cfg, source, plugins=[HardwarePlugin.from_config(cfg),
...                 ActivationLogPlugin(cfg), MqttPlugin(cfg)])      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge import __version__, identity
from edge.clock import Clock, SystemClock
from edge.errors import EdgeError
from edge.events import ActivationEnded, State, StateChanged
from edge.mqtt import commands
from edge.mqtt.client import MqttConnection, Will
from edge.mqtt.discovery import discovery_payload, discovery_topic
from edge.mqtt.messages import activation_message, encode, iso, state_message
from edge.mqtt.topics import BrokerSettings, DeviceTopics
from edge.policy import FRAME_S

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


class CommandFailed(Exception):
    """A checked command that could not be carried out; the message says why."""


@dataclass
class _Recent:
    wall_time: float
    likely_false: bool
    label: str = "unknown"

    @property
    def false(self) -> bool:
        return self.label == "false" or (self.label == "unknown" and self.likely_false)


class MqttPlugin:
    """Publishes the device's state and events; runs commands from ``cmd/<name>``."""

    def __init__(self, cfg: Any, *, device_id: str | None = None, clock: Clock | None = None,
                 settings: BrokerSettings | None = None) -> None:
        self.cfg = cfg
        self.m = cfg.mqtt
        self.settings = settings or BrokerSettings.from_config(self.m)
        self._given_id = device_id
        self._given_clock = clock
        self.clock: Clock = clock or SystemClock()
        self.daemon: Any = None
        self.topics: DeviceTopics | None = None
        self.conn: MqttConnection | None = None
        self.handled = 0
        self.refused = 0
        self.ignored_retained = 0
        self._lock = threading.Lock()
        self._q: queue.Queue[Any] = queue.Queue(maxsize=256)
        self._worker = threading.Thread(target=self._work, name="mqtt-commands", daemon=True)
        self._stop = threading.Event()
        self._mode = State.LISTENING.value
        self._mute_causes: tuple[str, ...] = ()
        self._fault: str | None = None
        self._thresholds: dict[str, float] = {}
        self._last: dict[str, Any] | None = None
        self._recent: dict[str, _Recent] = {}
        self._start_mono = 0.0
        self._cpu_last: float | None = None
        self._rtf: float | None = None
        self._last_frame: float | None = None
        self._soft_fallback = False
        self._purge_token: tuple[str, float] | None = None

    # ---- Plugin -----------------------------------------------------------------

    def attach(self, daemon: Any) -> None:
        self.daemon = daemon
        self.clock = self._given_clock or daemon.clock
        self._start_mono = self.clock.monotonic()
        device_id = self._given_id or identity.device_id(self.cfg.state_path)
        self.topics = t = DeviceTopics(self.m.base_topic, device_id)
        self._thresholds = {p.model: p.threshold for p in daemon.detector.policy.models}
        daemon.bus.subscribe("mqtt", self._on_event)
        daemon.on_frame.append(self._on_frame)
        self.conn = MqttConnection(self.settings, f"edge-recorder-{device_id}",
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
        if self.conn is not None and self.topics is not None:
            self.conn.stop(final=[(self.topics.status, "offline", 1, True)])

    # ---- what the device says -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The state message as it would be published now."""
        now = self.clock.wall()
        with self._lock:
            mode, error = self._mode, self._fault
            stale = (self._last_frame is not None and mode in ("listening", "recording")
                     and time.monotonic() - self._last_frame > STALL_S)
            if error is None and stale:
                error = f"no audio for {time.monotonic() - self._last_frame:.0f} s"  # type: ignore[operator]
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
        if self.conn is not None and self.topics is not None:
            self.conn.publish(self.topics.state, encode(self.state()), qos=1, retain=True)

    def _on_connect(self) -> None:
        """paho's thread, after each (re)connect: availability, discovery, state."""
        assert self.conn is not None and self.topics is not None
        self.conn.publish(self.topics.status, "online", qos=1, retain=True)
        self._announce()
        self.publish_state()

    def _announce(self) -> None:
        if self.m.discovery and self.conn is not None and self.topics is not None:
            self.conn.publish(discovery_topic(self.m.discovery_prefix, self.topics.device_id),
                              encode(discovery_payload(self.topics)), qos=1, retain=True)

    # ---- the bus thread ---------------------------------------------------------

    def _on_event(self, ev: Any) -> None:
        kind = type(ev).__name__
        if isinstance(ev, StateChanged):
            with self._lock:
                self._mode = ev.new
            self.publish_state()
        elif isinstance(ev, ActivationEnded):
            self._activation(ev)
        elif kind == "MuteChanged":
            with self._lock:
                self._mute_causes = tuple(ev.causes)
            self.publish_state()
        elif kind == "HardwareFault":
            with self._lock:
                self._fault = f"{ev.key}: {ev.message}"
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
        if self.conn is not None and self.topics is not None:
            self.conn.publish(self.topics.activation, encode(msg), qos=1, retain=False)
        self.publish_state()

    # ---- the audio thread (one cheap hook per frame) -------------------------------

    def _on_frame(self) -> None:
        cpu = time.thread_time()
        if self._cpu_last is not None:
            r = (cpu - self._cpu_last) / FRAME_S
            self._rtf = r if self._rtf is None else 0.98 * self._rtf + 0.02 * r
        self._cpu_last = cpu
        self._last_frame = time.monotonic()

    # ---- paho's network thread: queue only --------------------------------------------

    def _on_message(self, msg: Any) -> None:
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
        assert self.topics is not None
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
        assert self.conn is not None and self.topics is not None
        answer_on = self.topics.result(commands.safe_name(name))
        try:
            cmd = commands.parse(name, payload)
        except commands.CommandError as exc:
            self.refused += 1
            log.warning("MQTT command %s refused: %s", commands.safe_name(name), exc)
            self.conn.publish(answer_on, commands.error(commands.safe_name(name), exc.tx,
                                                        str(exc)), qos=1)
            return
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_cmd_{cmd.name}")
        try:
            data = handler(cmd.args)
        except (CommandFailed, EdgeError) as exc:
            self.refused += 1
            log.warning("MQTT command %s failed: %s", cmd.name, exc)
            self.conn.publish(answer_on, commands.error(cmd.name, cmd.tx, str(exc)), qos=1)
            return
        self.handled += 1
        log.info("MQTT command %s done", cmd.name)
        self.conn.publish(answer_on, commands.result(cmd.name, cmd.tx, True, **data), qos=1)

    def _on_audio_thread(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(recorder)`` between frames and wait for it; its value or its error."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run(rec: Any) -> None:
            try:
                box["value"] = fn(rec)
            except Exception as exc:
                box["error"] = exc
            finally:
                done.set()

        self.daemon.post(run)
        if not done.wait(AUDIO_LOOP_TIMEOUT_S):
            raise CommandFailed(f"the audio loop did not run the command within "
                                f"{AUDIO_LOOP_TIMEOUT_S:g} s (is the recorder stopped?)")
        if "error" in box:
            raise CommandFailed(f"the command failed on the audio loop: {box['error']}")
        return box.get("value")

    def _plugin_with(self, method: str) -> Any:
        for p in self.daemon.plugins:
            if p is not self and callable(getattr(p, method, None)):
                return p
        return None

    # -- label

    def _cmd_label(self, args: dict[str, Any]) -> dict[str, Any]:
        log_plugin = self._plugin_with("label")
        if log_plugin is None:
            raise CommandFailed("the activation log is off on this device "
                                "(activations.enabled = false); nothing to label")
        aid = log_plugin.label(args["activation"], args["label"], args.get("source", "mqtt"))
        with self._lock:
            if aid in self._recent:
                self._recent[aid].label = args["label"]
        self.publish_state()
        return {"activation": aid, "label": args["label"]}

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
        self._on_audio_thread(lambda rec: rec.policy.set_threshold(model, value))
        with self._lock:
            self._thresholds[model] = value
        log.info("threshold of %s set from %g to %g over MQTT", model, old, value)
        self.publish_state()
        return {"model": model, "threshold": value, "previous": old}

    # -- mute

    def _cmd_mute(self, args: dict[str, Any]) -> dict[str, Any]:
        on: bool = args["on"]
        if not on and not self.m.allow_remote_unmute:
            raise CommandFailed("mute: a remote unmute is refused on this device "
                                "(mqtt.allow_remote_unmute = false); unmute at the device")
        hw = self._plugin_with("request_unmute")
        controller = getattr(hw, "mute", None) if hw is not None else None

        def apply(rec: Any) -> tuple[bool, tuple[str, ...]]:
            if controller is not None:
                # the hardware's mute controller: the soft mute only adds to the switch
                if on:
                    controller.soft_mute(rec, "mqtt")
                else:
                    controller.soft_unmute(rec, "mqtt", remote=False)
                return controller.muted, tuple(c for c in ("switch", "soft", "fault")
                                               if c in controller.causes)
            if on:
                rec.mute("soft")
                self._soft_fallback = True
            elif self._soft_fallback:
                rec.unmute("soft")
                self._soft_fallback = False
            muted = rec.state is State.MUTED
            return muted, ("soft",) if muted else ()

        muted, causes = self._on_audio_thread(apply)
        with self._lock:
            self._mute_causes = causes
        self.publish_state()
        out: dict[str, Any] = {"soft_mute": on, "muted": muted, "mute_causes": list(causes)}
        if not on and muted:
            out["note"] = f"the soft mute is off, but the device stays muted by " \
                          f"{', '.join(c for c in causes if c != 'soft')}"
        return out

    # -- stats

    def _cmd_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        def snapshot(rec: Any) -> dict[str, Any]:
            s = rec.stats
            return {"frames": s.frames, "detections": s.detections,
                    "ignored_detections": s.ignored_detections, "clips": s.clips,
                    "discarded": s.discarded, "by_reason": dict(s.by_reason)}

        out: dict[str, Any] = {"state": self.state(), "recorder": self._on_audio_thread(snapshot),
                               "commands": {"handled": self.handled, "refused": self.refused,
                                            "ignored_retained": self.ignored_retained}}
        if self.cfg.activations.enabled:
            from edge.activations import ActivationLog, db_path, parse_since
            from edge.stats import compute

            since = parse_since(args["since"]) if args.get("since") else None
            with ActivationLog.open(db_path(self.cfg), create=False) as store:
                report = compute(store, since)
            report.pop("reference", None)
            out["activation_log"] = report
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
        owner = self._plugin_with("purge")
        if owner is not None:
            out = owner.purge()
        else:
            from edge.errors import StateLockedError
            from edge.retention import purge

            try:
                out = purge(self.cfg)
            except StateLockedError:
                raise CommandFailed("purge: the state directory is held by the upload "
                                    "subsystem, which offers no live purge; stop the "
                                    "recorder and run `edge purge --yes`") from None
        return {r.label: r.files for r in out}
