"""The audio loop: the one thread that owns the source and the recorder.

GPIO callbacks, MQTT commands and signal handlers never touch the recorder:
they ``post`` a command, which the loop runs between frames. A mute command is
therefore honoured before the next frame is read (within 80 ms).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from edge.audio import AudioSource
from edge.errors import AudioDeviceError
from edge.events import State
from edge.recorder import Recorder

log = logging.getLogger(__name__)

Command = Callable[[Recorder], None]


class Runner:
    def __init__(
        self,
        source: AudioSource,
        recorder: Recorder,
        on_frame: Callable[[], None] | None = None,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] | None = None,
        on_started: Callable[[], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.recorder = recorder
        self.on_frame = on_frame
        self.on_started = on_started
        """Called on the loop after each successful ``source.start()`` (readiness, watchdog)."""
        self.on_idle = on_idle
        """Called on the loop while capture is deliberately stopped (muted): the loop is alive."""
        self.max_backoff_s = max_backoff_s
        self._commands: queue.Queue[Command] = queue.Queue()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._capturing = False
        self.reopen_attempts = 0

    def post(self, command: Command) -> None:
        """Run ``command(recorder)`` on the audio thread before the next frame."""
        self._commands.put(command)

    def stop(self) -> None:
        """Ask the loop to end; safe from any thread or a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        try:
            self._drain()
            self._sync_capture()
            while not self._stop.is_set():
                self._drain()
                self._sync_capture()
                if not self._capturing:
                    if self.on_idle is not None:
                        self.on_idle()
                    self._wait_for_command(0.05)
                    continue
                try:
                    frame = self.source.read()
                except AudioDeviceError as exc:
                    self._reopen(exc)
                    continue
                if frame is None:
                    self.recorder.end_of_stream()
                    break
                self.recorder.feed(frame)
                if self.on_frame is not None:
                    self.on_frame()
            self._drain()
        finally:
            self.recorder.shutdown()
            self._stop_capture()
            self.source.close()

    def _drain(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            self._run_command(cmd)

    def _wait_for_command(self, timeout: float) -> None:
        try:
            cmd = self._commands.get(timeout=timeout)
        except queue.Empty:
            return
        # Run it here: it is the oldest. Putting it back would run it after newer ones
        # (a mute and an unmute posted together would swap).
        self._run_command(cmd)

    def _run_command(self, cmd: Command) -> None:
        try:
            cmd(self.recorder)
        except Exception:
            log.exception("command failed")

    def _sync_capture(self) -> None:
        want = self.recorder.state not in (State.MUTED, State.STOPPED)
        if want and not self._capturing:
            try:
                self.source.start()
                self._capturing = True
            except AudioDeviceError as exc:
                self._reopen(exc)
            else:
                self._started()
        elif not want and self._capturing:
            self._stop_capture()

    def _started(self) -> None:
        if self.on_started is not None:
            self.on_started()

    def _stop_capture(self) -> None:
        if self._capturing:
            self._capturing = False
            try:
                self.source.stop()
            except AudioDeviceError as exc:
                log.warning("stopping capture failed: %s", exc)

    def _reopen(self, exc: AudioDeviceError) -> None:
        """The device went away: keep the daemon up and try again, backing off."""
        self._capturing = False
        delay = 0.5
        while not self._stop.is_set():
            self.reopen_attempts += 1
            log.warning("audio device lost (%s); reopening in %.1f s (attempt %d)",
                        exc, delay, self.reopen_attempts)
            self._sleep(delay)
            self._drain()
            if self.recorder.state is State.MUTED:
                return
            with contextlib.suppress(AudioDeviceError):
                self.source.stop()
            try:
                self.source.start()
                self._capturing = True
                log.warning("audio device reopened after %d attempt(s)", self.reopen_attempts)
                self._started()
                return
            except AudioDeviceError as again:
                exc = again
                delay = min(delay * 2, self.max_backoff_s)

