"""The audio loop: the one thread that owns the source and the recorder.

GPIO callbacks, MQTT commands and signal handlers never touch the recorder: they
post a command to the loop's ``Commands`` queue (or ``call`` it and wait for its
value), which the loop runs between frames. A mute command is therefore honoured
before the next frame is read (within 80 ms).

>>> commands = Commands()
>>> commands.post(lambda recorder: recorder.mute("switch"))   # from any thread
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from edge.audio.frames import FRAME_S
from edge.audio.sources import AudioSource
from edge.errors import AudioDeviceError, EdgeError
from edge.pipeline.events import LoopHealth, State
from edge.pipeline.recorder import Recorder

log = logging.getLogger(__name__)

Command = Callable[[Recorder], None]
Hook = Callable[[], None]
HEALTH_EVERY_FRAMES = 12
"""About a second of audio between ``LoopHealth`` events (a division, on the audio thread)."""


class CommandTimeout(EdgeError):
    """The audio loop did not run a command in time (it is stopped, or stuck)."""


def wait_for_loop(done: Future[Any], timeout: float) -> Any:
    """The value of a ``Commands.submit`` future (or its exception, raised here);
    ``CommandTimeout`` when the loop did not run it within ``timeout`` s."""
    try:
        return done.result(timeout)
    except TimeoutError:
        if done.done():  # the command itself raised TimeoutError
            raise
        raise CommandTimeout(f"the audio loop did not run the command within {timeout:g} s "
                             "(is the recorder stopped?)") from None


class Commands:
    """The audio loop's command queue: the only way other threads reach the recorder."""

    def __init__(self) -> None:
        self._q: queue.Queue[Command] = queue.Queue()

    def post(self, command: Command) -> None:
        """Run ``command(recorder)`` on the audio thread before the next frame."""
        self._q.put(command)

    def submit(self, fn: Callable[[Recorder], Any]) -> Future[Any]:
        """Run ``fn(recorder)`` between frames; a future of its value or its exception.
        Never waits: a caller that must not be held up (an MQTT mute) posts and goes on."""
        done: Future[Any] = Future()

        def run(recorder: Recorder) -> None:
            try:
                done.set_result(fn(recorder))
            except Exception as exc:
                done.set_exception(exc)

        self.post(run)
        return done

    def call(self, fn: Callable[[Recorder], Any], timeout: float) -> Any:
        """Run ``fn(recorder)`` between frames and wait for it: its value, or its exception
        raised here; ``CommandTimeout`` when the loop did not run it within ``timeout`` s."""
        return wait_for_loop(self.submit(fn), timeout)

    def get_nowait(self) -> Command:
        return self._q.get_nowait()

    def get(self, timeout: float) -> Command:
        return self._q.get(timeout=timeout)


class Runner:
    def __init__(
        self,
        source: AudioSource,
        recorder: Recorder,
        commands: Commands | None = None,
        *,
        on_frame: Sequence[Hook] = (),
        on_started: Sequence[Hook] = (),
        on_idle: Sequence[Hook] = (),
        on_health: Callable[[LoopHealth], None] | None = None,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.source = source
        self.recorder = recorder
        self.commands = commands or Commands()
        self.on_frame = list(on_frame)
        """Called on the loop after each frame (the watchdog, the clock watch)."""
        self.on_started = list(on_started)
        """Called on the loop after each successful ``source.start()`` (readiness, watchdog)."""
        self.on_idle = list(on_idle)
        """Called on the loop while capture is deliberately stopped (muted): the loop is alive."""
        self.on_health = on_health
        """Given a ``LoopHealth`` about once a second of audio (the real-time factor)."""
        self.max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._capturing = False
        self._cpu_mark = time.thread_time()
        self._frames_since = 0
        self.reopen_attempts = 0

    def post(self, command: Command) -> None:
        """Run ``command(recorder)`` on the audio thread before the next frame."""
        self.commands.post(command)

    def call(self, fn: Callable[[Recorder], Any], timeout: float) -> Any:
        """Run ``fn(recorder)`` on the audio thread and wait for its value (``Commands.call``)."""
        return self.commands.call(fn, timeout)

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
                    _call_all(self.on_idle)
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
                _call_all(self.on_frame)
                self._health()
            self._drain()
        finally:
            self.recorder.shutdown()
            self._stop_capture()
            self.source.close()

    def _drain(self) -> None:
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return
            self._run_command(cmd)

    def _wait_for_command(self, timeout: float) -> None:
        try:
            cmd = self.commands.get(timeout=timeout)
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
        self._cpu_mark, self._frames_since = time.thread_time(), 0
        _call_all(self.on_started)

    def _health(self) -> None:
        """Every ``HEALTH_EVERY_FRAMES`` frames: CPU seconds per audio second, to observers."""
        if self.on_health is None:
            return
        self._frames_since += 1
        if self._frames_since < HEALTH_EVERY_FRAMES:
            return
        cpu = time.thread_time()
        rtf = (cpu - self._cpu_mark) / (self._frames_since * FRAME_S)
        self.on_health(LoopHealth(round(rtf, 4), self.recorder.t, time.monotonic()))
        self._cpu_mark, self._frames_since = cpu, 0

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


def _call_all(hooks: Sequence[Hook]) -> None:
    for hook in hooks:
        hook()
