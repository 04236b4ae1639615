"""The live daemon: the composition of source, recorder, sinks and observers.

Subsystems (hardware, outbox, activation log, MQTT) attach here, each through a
``Plugin``: it subscribes to events, may add sinks, and posts commands to the
audio loop through the runner. Nothing but the audio loop touches the recorder.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from edge.app import build_detector, build_recorder, model_store
from edge.audio import AudioSource
from edge.clip import Clip
from edge.clock import Clock, SystemClock
from edge.config import Config
from edge.crypto import sealer_for
from edge.events import EventBus
from edge.runner import Runner
from edge.sinks import ClipSink
from edge.sinks.dispatch import ClipDispatcher
from edge.sinks.local import LocalDirSink

log = logging.getLogger(__name__)


class Plugin(Protocol):
    """A subsystem attached to the daemon."""

    def attach(self, daemon: Daemon) -> None:
        """Subscribe to events, add sinks; called before the audio loop starts."""
        ...

    def close(self) -> None:
        """Called after the audio loop has stopped and every clip was handed over."""
        ...

    # Optional: ``started()``, called once the recorder and runner exist, before the loop
    # runs (a plugin may ``daemon.post`` from there: the command runs before the first frame).


@dataclass
class Daemon:
    cfg: Config
    source: AudioSource
    clock: Clock = field(default_factory=SystemClock)
    plugins: list[Any] = field(default_factory=list)
    sinks: list[ClipSink] = field(default_factory=list)
    on_frame: list[Callable[[], None]] = field(default_factory=list)
    on_started: list[Callable[[], None]] = field(default_factory=list)
    """Called on the audio loop after capture (re)started: the microphone is open."""
    on_idle: list[Callable[[], None]] = field(default_factory=list)
    """Called on the audio loop while capture is deliberately stopped (muted)."""
    after_command: list[Callable[[Any], None]] = field(default_factory=list)
    """Run on the audio thread after every posted command (the hardware re-asserts a mute)."""
    cancel_window_s: float = 0.0

    def __post_init__(self) -> None:
        self.bus = EventBus()
        self.store = model_store(self.cfg.wake)
        self.detector = build_detector(self.cfg.wake, self.store)
        if self.cfg.output.keep_local:
            self.sinks.append(LocalDirSink(self.cfg.under_state(self.cfg.output.clips_dir),
                                           sealer_for(self.cfg.upload.encrypt_to)))
        for p in self.plugins:
            p.attach(self)
        self.dispatcher = ClipDispatcher(self.sinks)
        self.recorder = build_recorder(self.cfg, self.detector, self.bus, self._clip_out,
                                       self.clock, self.store, self.cancel_window_s)
        self.runner = Runner(self.source, self.recorder, on_frame=self._frame_hooks,
                             max_backoff_s=self.cfg.audio.reopen_max_backoff_s,
                             on_started=lambda: _call_all(self.on_started),
                             on_idle=lambda: _call_all(self.on_idle))
        for p in self.plugins:
            started = getattr(p, "started", None)
            if started is not None:
                started()

    def _clip_out(self, clip: Clip) -> None:
        self.dispatcher.submit(clip)

    def _frame_hooks(self) -> None:
        for hook in self.on_frame:
            hook()

    def post(self, command: Callable[[Any], None]) -> None:
        """Run ``command(recorder)`` on the audio thread before the next frame, then the
        ``after_command`` hooks."""
        if not self.after_command:
            self.runner.post(command)
            return

        def run(recorder: Any) -> None:
            try:
                command(recorder)
            finally:
                for hook in self.after_command:
                    hook(recorder)

        self.runner.post(run)

    def run(self, install_signals: bool = True) -> None:
        """Run until the input ends or SIGTERM/SIGINT; then drain clips and close."""
        if install_signals and threading.current_thread() is threading.main_thread():
            self._install_signals()
        try:
            self.runner.run()
        finally:
            self.close()

    def stop(self) -> None:
        self.runner.stop()

    def close(self) -> None:
        self.dispatcher.close()
        for p in reversed(self.plugins):
            try:
                p.close()
            except Exception:
                log.exception("closing %s failed", type(p).__name__)
        self.bus.close()

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.runner.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _call_all(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        hook()
