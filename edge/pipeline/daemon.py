"""The live daemon, as built by the composition root (edge.compose): run it, stop it, close it.

It holds what the composition made (the bus, the detector, the recorder, the clip
dispatcher, the audio loop) and the subsystems that observe it. It builds nothing:
every collaborator was handed to each subsystem through its constructor. Nothing
but the audio loop touches the recorder; other threads ``post`` or ``call``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol

from edge.clock import Clock
from edge.pipeline.clip import Clip
from edge.pipeline.events import EventBus
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Command, Hook, Runner
from edge.wake.detector import Detector

log = logging.getLogger(__name__)

BUS_FLUSH_S = 5.0
"""At close, how long the subscribers get to handle the recorder's last events."""


class Dispatcher(Protocol):
    """Takes finished clips off the audio loop (edge.sinks.dispatch.ClipDispatcher)."""

    def submit(self, clip: Clip) -> None: ...

    def close(self) -> None:
        """Deliver every clip handed over, then stop."""
        ...


class Subsystem(Protocol):
    """A part of the daemon with threads or resources of its own."""

    def start(self) -> None:
        """Before the audio loop runs (it may post commands: they run before the first frame)."""
        ...

    def close(self) -> None:
        """After the audio loop has stopped and every clip was handed over."""
        ...


class Daemon:
    """The audio loop and what observes it, started and closed in order."""

    def __init__(self, *, bus: EventBus, detector: Detector, recorder: Recorder,
                 runner: Runner, dispatcher: Dispatcher, clock: Clock,
                 subsystems: Sequence[Subsystem] = ()) -> None:
        self.bus = bus
        self.detector = detector
        self.recorder = recorder
        self.runner = runner
        self.dispatcher = dispatcher
        self.clock = clock
        self.subsystems = tuple(subsystems)
        """In start order; closed in reverse."""

    @property
    def on_frame(self) -> list[Hook]:
        """Hooks the audio loop calls after each frame (tests and benchmarks add theirs)."""
        return self.runner.on_frame

    def post(self, command: Command) -> None:
        """Run ``command(recorder)`` on the audio thread before the next frame."""
        self.runner.post(command)

    def call(self, fn: Callable[[Recorder], Any], timeout: float) -> Any:
        """Run ``fn(recorder)`` on the audio thread and wait for its value."""
        return self.runner.call(fn, timeout)

    def start(self) -> None:
        for s in self.subsystems:
            s.start()

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
        if not self.bus.flush(BUS_FLUSH_S):
            log.warning("an event subscriber did not finish within %g s; closing anyway",
                        BUS_FLUSH_S)
        for s in reversed(self.subsystems):
            try:
                s.close()
            except Exception:
                log.exception("closing %s failed", type(s).__name__)
        self.bus.close()

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.runner.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
