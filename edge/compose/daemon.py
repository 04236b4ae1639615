"""The composition root of the live daemon: every object built from the config, in one place.

Each subsystem is handed the collaborators it needs through its constructor; no
subsystem wraps, replaces or looks up another's objects. What is built, and why in
this order:

1. the clock, the event bus, the audio loop's command queue and the detector;
2. the hardware (it holds the mute, so it comes first and is the recorder's state
   listener), the activation log, the upload subsystem (it takes the state lock);
3. the clip sinks and their dispatcher, then the recorder that hands clips to it;
4. the observers: the clock watch, systemd, the live purge, MQTT;
5. the audio loop, reading the source through the hardware's frame guard.

``edge run`` builds the device here; tests and benchmarks pass their real-but-local
parts (a mock pin factory, a fake clock, a sender, a notifier) in ``Seams``.

>>> device = build_device(cfg, source)      # doctest: +SKIP
>>> device.daemon.run()                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.activations.plugin import ActivationLogPlugin
from edge.activations.stats import compute
from edge.activations.store import ActivationLog, db_path, parse_since
from edge.audio.sources import AudioSource
from edge.clock import Clock, SystemClock
from edge.compose.preflight import preflight
from edge.config import Config
from edge.hardware.chime import ChimeOutput
from edge.hardware.plugin import HardwarePlugin
from edge.pipeline.clip import Clip
from edge.pipeline.daemon import Daemon, Subsystem
from edge.pipeline.events import ClipUploaded, EventBus, RunEnded
from edge.pipeline.recorder import Recorder, RecordingTap, StateListener
from edge.pipeline.runner import Commands, Hook, Runner
from edge.privacy.crypto import sealer_for
from edge.service.activity import ActivityLog
from edge.service.clockwatch import ClockWatch
from edge.service.heap import HeapTrim
from edge.service.startup import FirstFrame
from edge.service.systemd import SystemdPlugin
from edge.sinks.base import ClipSink
from edge.sinks.dispatch import ClipDispatcher
from edge.sinks.local import LocalDirSink
from edge.upload.live_purge import LivePurge
from edge.upload.plugin import UploadPlugin
from edge.upload.uploader import Sender
from edge.wake.detector import Detector, model_store
from edge.wake.engine import WakeEngine
from edge.wake.models import VAD_MODEL, ModelStore
from edge.wake.policy import ScoreRun
from edge.wake.vad import DeferredVad, SileroVad, Vad
from edge.wake.verifier import Verifier

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from edge.assist.answer import Speaker
    from edge.assist.plugin import AssistPlugin
    from edge.mqtt.device import MqttPlugin, StatsReport
    from edge.mqtt.topics import BrokerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seams:
    """What the composition takes from outside instead of making it. Every default is the
    real part; tests, benchmarks and the demo pass real-but-local ones."""

    clock: Clock | None = None
    """Wall and monotonic time; None: the system's."""
    wrap_engine: Callable[[WakeEngine], WakeEngine] | None = None
    """Wraps the wake engine built from ``[wake]`` (a test counts the frames it scores)."""
    pin_factory: Factory | None = None
    """gpiozero pin factory; None: the one ``hardware.pin_factory`` names."""
    chime_output: ChimeOutput | None = None
    chime_background: bool = True
    """Play chimes on their own thread (False: on the audio thread, for exact tests)."""
    sender: Sender | None = None
    """Where uploads go; None: the one ``upload.mode`` names."""
    rng: random.Random | None = None
    """The uploader's backoff jitter."""
    verifier: Verifier | None = None
    """The activation log's second opinion; None: the one ``activations.verifier`` names."""
    device_id: str | None = None
    """The pseudonymous id on MQTT; None: the one in the state directory."""
    broker: BrokerSettings | None = None
    """The MQTT broker; None: ``[mqtt]``'s."""
    systemd: Callable[[Sequence[str]], SystemdPlugin | None] = SystemdPlugin.from_env
    """Given the model names, the systemd notifier (None: not run by systemd)."""
    upload_drain_s: float = 5.0
    """At exit, how long queued clips may still upload."""
    retention_every_s: float = 3600.0
    """Seconds between retention sweeps."""
    cancel_window_s: float | None = None
    """How long a finished clip waits in memory before the sinks; None: the cancel
    button's window (``hardware.cancel_window_s``, 0 without a button)."""
    speaker: Speaker | None = None
    """Where the voice assistant's answers play; None: the ``audio.output`` device."""
    store: ModelStore | None = None
    """The model store ``[wake]`` names, when the caller has made it (``edge run``, to hash
    the model files early); None: made here."""


@dataclass
class Device:
    """The built daemon and its subsystems (None where the config turns one off)."""

    daemon: Daemon
    hardware: HardwarePlugin
    upload: UploadPlugin
    purge: LivePurge
    clockwatch: ClockWatch
    activations: ActivationLogPlugin | None
    mqtt: MqttPlugin | None
    systemd: SystemdPlugin | None
    assist: AssistPlugin | None = None
    """The voice assistant hand-off (``[assist] mode``); None when off: no socket is open."""


def deferred_vad(cfg: Config, store: ModelStore) -> DeferredVad:
    """The VAD ``[wake]`` runs it on, its file verified now, loaded on first use or when
    ``load()`` is called (the daemon: right after its first frame)."""
    path, runtime = store.path(VAD_MODEL), cfg.wake.runtime
    return DeferredVad(lambda: SileroVad.load(path, runtime))


def build_recorder(cfg: Config, detector: Detector, bus: EventBus,
                   clip_out: Callable[[Clip], None], clock: Clock | None = None,
                   store: ModelStore | None = None, cancel_window_s: float = 0.0,
                   listeners: Sequence[StateListener] = (),
                   taps: Sequence[RecordingTap] = (), vad: Vad | None = None) -> Recorder:
    """The recorder for ``cfg`` (``edge run``, ``edge replay`` and the benchmarks); its VAD
    ``vad``, else :func:`deferred_vad`'s (loaded on first use)."""
    store = store or model_store(cfg.wake)
    vad = vad or deferred_vad(cfg, store)
    return Recorder(detector.engine, detector.policy, vad, cfg.record, cfg.audio.pre_roll_s, bus,
                    clip_out, clock or SystemClock(), cancel_window_s=cancel_window_s,
                    keep_false_audio=cfg.activations.enabled
                    and cfg.activations.keep_false_activation_audio, listeners=listeners,
                    taps=taps)


def activation_stats(cfg: Config) -> StatsReport:
    """The activation log's statistics, read from its database (MQTT ``cmd/stats``)."""
    def report(since: str | None) -> dict[str, Any]:
        with ActivationLog.open(db_path(cfg), create=False) as store:
            out = compute(store, parse_since(since, key="since") if since else None)
        out.pop("reference", None)
        return out

    return report


def kept_where(cfg: Config, upload: UploadPlugin) -> str | None:
    """Where a clip handed to the sinks goes, in words for the log (None: nowhere)."""
    places = []
    if cfg.output.keep_local:
        places.append(f"kept in {cfg.under_state(cfg.output.clips_dir)}")
    if upload.sender is not None:
        places.append(f"queued for upload to {upload.sender.destination}")
    return " and ".join(places) or None


def build_device(cfg: Config, source: AudioSource, seams: Seams | None = None) -> Device:
    """Build the live daemon for ``cfg`` reading ``source``, and start its subsystems'
    threads; run it with ``device.daemon.run()``. A failure part way closes what was built."""
    seams = seams or Seams()
    built: list[Subsystem] = []
    try:
        return _build(cfg, source, seams, built)
    except BaseException:
        for s in reversed(built):
            try:
                s.close()
            except Exception:
                log.exception("closing %s after a failed start failed", type(s).__name__)
        raise


def _build(cfg: Config, source: AudioSource, seams: Seams, built: list[Subsystem]) -> Device:
    def run_ended(run: ScoreRun) -> None:  # called on the audio loop, once ``bus`` exists
        bus.publish(RunEnded(run))

    # every check ``edge config check`` makes, whoever made ``cfg``; nothing is built before it
    checked = preflight(cfg, on_run_end=run_ended, store=seams.store)
    clock = seams.clock or SystemClock()
    bus = EventBus()
    commands = Commands()
    store, detector = checked.store, checked.detector
    if seams.wrap_engine is not None:
        detector.engine = seams.wrap_engine(detector.engine)

    hardware = HardwarePlugin.from_config(cfg, bus, clock, commands, factory=seams.pin_factory,
                                          chime_output=seams.chime_output,
                                          chime_background=seams.chime_background)
    built.append(hardware)
    activations = None
    clips_kept = cfg.output.keep_local or cfg.upload.mode != "off"
    if cfg.activations.enabled:
        activations = ActivationLogPlugin(cfg, clock, clips_kept=clips_kept,
                                          thresholds=detector.policy.thresholds,
                                          verifier=seams.verifier)
        built.append(activations)
    def delivered(clip_id: str) -> None:  # on the uploader's thread
        if activations is not None:
            activations.mark_uploaded(clip_id)
        bus.publish(ClipUploaded(clip_id, upload.sender.destination if upload.sender else ""))

    upload = UploadPlugin(cfg, clock, sender=seams.sender, rng=seams.rng, on_delivered=delivered,
                          drain_s=seams.upload_drain_s, retention_every_s=seams.retention_every_s)
    built.append(upload)

    sinks: list[ClipSink] = []
    if cfg.output.keep_local:
        sinks.append(LocalDirSink(cfg.under_state(cfg.output.clips_dir),
                                  sealer_for(cfg.upload.encrypt_to)))
    if upload.sink is not None:
        sinks.append(upload.sink)
    dispatcher = ClipDispatcher(sinks)
    assist = None
    if cfg.assist.mode != "off":  # off: nothing of it imported, no socket opened
        from edge.assist.plugin import AssistPlugin

        assist = AssistPlugin.build(cfg, commands, clock, hardware, detector.names,
                                    device_id=seams.device_id, speaker=seams.speaker,
                                    publish=bus.publish, store=store,
                                    on_run_end=run_ended, lights=hardware,
                                    bell=hardware)
        built.append(assist)
    vad = deferred_vad(cfg, store)
    recorder = build_recorder(cfg, detector, bus, dispatcher.submit, clock, store,
                              cancel_window_s=hardware.cancel_window_s
                              if seams.cancel_window_s is None else seams.cancel_window_s,
                              listeners=[hardware],
                              taps=[assist.tap] if assist is not None else [], vad=vad)

    clockwatch = ClockWatch(clock)
    built.append(clockwatch)
    purge = LivePurge(commands, dispatcher, upload)
    mqtt = None
    if cfg.mqtt.enabled:  # off: its client, TLS and paho are not even imported
        from edge.mqtt.device import MqttPlugin

        mqtt = MqttPlugin(cfg, clock, commands, thresholds=detector.policy.thresholds,
                          mute=hardware, device_id=seams.device_id, settings=seams.broker,
                          labeler=activations, purger=purge,
                          stats=activation_stats(cfg) if activations else None)
        built.append(mqtt)
    systemd = seams.systemd(detector.names)
    if systemd is not None:
        built.append(systemd)

    on_frame: list[Hook] = [hardware.on_frame, clockwatch.on_frame,
                            FirstFrame(then=vad.load).on_frame]
    if activations is not None and cfg.activations.checkpoint_s:
        on_frame.append(activations.on_frame)
    if systemd is not None and systemd.watchdog is not None:
        on_frame.append(systemd.frame)
    bus.subscribe("activity-log", ActivityLog(kept_where(cfg, upload)).on_event)
    bus.subscribe("heap-trim", HeapTrim(clock).on_event)
    for name, subscriber in (("activation-log", activations), ("mqtt", mqtt),
                             ("systemd-status", systemd), ("assist", assist)):
        if subscriber is not None:
            bus.subscribe(name, subscriber.on_event)
    runner = Runner(hardware.guard(source), recorder, commands, on_frame=on_frame,
                    on_started=[systemd.started] if systemd else [],
                    on_idle=[systemd.idle] if systemd else [], on_health=bus.publish,
                    max_backoff_s=cfg.audio.reopen_max_backoff_s)
    daemon = Daemon(bus=bus, detector=detector, recorder=recorder, runner=runner,
                    dispatcher=dispatcher, clock=clock, subsystems=built)
    daemon.start()
    return Device(daemon, hardware, upload, purge, clockwatch, activations, mqtt, systemd,
                  assist)
