"""Telling systemd how the service is: readiness, status, stopping and the watchdog.

systemd's notification protocol is one datagram per message on the unix socket
named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace),
holding newline-separated ``KEY=value`` lines. It is a few lines of code, so no
library is needed.

>>> n = Notifier.from_env()          # None when not started by systemd with Type=notify
>>> n and n.send("READY=1", "STATUS=listening")

``SystemdPlugin`` wires it into the daemon:

* ``READY=1`` once the models are loaded (the daemon is built) and the audio
  loop has opened the microphone, or runs with it deliberately closed because
  the device started muted (otherwise a mute switch left on at boot would make
  systemd time the start out and restart the service over and over);
* ``WATCHDOG=1`` from the audio loop only (``Watchdog``), and only while frames
  arrive on time, so a stalled capture or a wedged loop stops the pings and
  systemd restarts the service after ``WatchdogSec``;
* ``STATUS=`` on every state change (never any audio or detection content);
* ``STOPPING=1`` when the loop stops.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge.audio.frames import FRAME_S
from edge.pipeline.events import State, StateChanged

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one socket; a send that fails is logged, never raised."""

    def __init__(self, address: str) -> None:
        if not address or address[0] not in "/@":
            raise ValueError(f"NOTIFY_SOCKET = {address!r} is not a unix socket path or "
                             "@abstract name")
        self.address = "\0" + address[1:] if address[0] == "@" else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sent = 0
        self.failed = 0
        self.closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for through $NOTIFY_SOCKET, or None."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        try:
            return cls(address)
        except ValueError as exc:  # e.g. a vsock: address, which a Pi service never gets
            log.warning("not notifying systemd: %s", exc)
            return None

    def send(self, *lines: str) -> bool:
        if self.closed:
            return False
        message = "\n".join(lines).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 1000 == 0:
                log.warning("cannot notify systemd at %s (%d failures): %s",
                            self.address.replace("\0", "@"), self.failed, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        self.closed = True
        self._sock.close()


def watchdog_timeout(environ: Mapping[str, str] | None = None,
                     pid: int | None = None) -> float | None:
    """The watchdog timeout systemd set for this process, in seconds, or None.

    Like ``sd_watchdog_enabled``: $WATCHDOG_USEC, honoured only when $WATCHDOG_PID is
    unset or names this process (a child that inherited the variables must not ping).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC = %r: not a whole number of microseconds", usec)
        return None
    return value / 1e6 if value > 0 else None


class Watchdog:
    """Pings the watchdog from the audio loop, only while audio arrives on time.

    Frames are counted over windows of half the timeout (systemd's advice). At the
    end of a window it pings if the frames that arrived hold at least ``min_ratio``
    of the window's wall-clock time in audio. A capture that stalls delivers no
    frames, so no window ends and no ping is sent; one that limps along at a
    fraction of real time (a failing USB link, a starved loop) is late and is not
    pinged either. While the loop runs with capture deliberately stopped (muted),
    ``idle`` pings at the same rate: the loop itself is alive.
    """

    def __init__(self, ping: Callable[[], object], timeout_s: float, min_ratio: float = 0.5,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"watchdog timeout must be positive, got {timeout_s}")
        self._ping = ping
        self.interval_s = timeout_s / 2
        self.min_ratio = min_ratio
        self._now = monotonic
        self._since: float | None = None
        self._frames = 0
        self._last_idle_ping: float | None = None
        self.pings = 0
        self.late_windows = 0

    def started(self) -> None:
        """Capture (re)started: time spent opening the device does not count as late."""
        self._since = self._now()
        self._frames = 0
        self._last_idle_ping = None

    def frame(self) -> None:
        now = self._now()
        if self._since is None:
            self._since, self._frames = now, 0
        self._frames += 1
        elapsed = now - self._since
        if elapsed < self.interval_s:
            return
        audio_s = self._frames * FRAME_S
        if audio_s >= self.min_ratio * elapsed:
            self._send()
        else:
            self.late_windows += 1
            log.warning("capture is late: %.1f s of audio arrived in %.1f s; not pinging the "
                        "watchdog", audio_s, elapsed)
        self._since, self._frames = now, 0

    def idle(self) -> None:
        """The loop is alive with capture deliberately stopped (muted)."""
        now = self._now()
        self._since = None
        if self._last_idle_ping is None or now - self._last_idle_ping >= self.interval_s:
            self._last_idle_ping = now
            self._send()

    def _send(self) -> None:
        self.pings += 1
        self._ping()


class SystemdPlugin:
    """Readiness, status, watchdog and stopping notifications for a daemon run by systemd.

    The composition root hands ``started``, ``idle`` and (with a watchdog) ``frame`` to the
    audio loop as hooks, and ``on_event`` to the bus.
    """

    def __init__(self, notifier: Notifier, models: Sequence[str],
                 watchdog_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.watchdog = (Watchdog(notifier.watchdog, watchdog_s, monotonic=monotonic)
                         if watchdog_s else None)
        self.ready = False
        self._listening = f"listening for {', '.join(models)}"
        self._stopping = False

    @classmethod
    def from_env(cls, models: Sequence[str],
                 environ: Mapping[str, str] | None = None) -> SystemdPlugin | None:
        notifier = Notifier.from_env(environ)
        if notifier is None:
            return None
        return cls(notifier, models, watchdog_timeout(environ))

    def start(self) -> None:
        pass

    def frame(self) -> None:
        if self.watchdog is not None:
            self.watchdog.frame()

    def started(self) -> None:
        if self.watchdog is not None:
            self.watchdog.started()
        if not self.ready:
            self.ready = True
            self.notifier.ready(self._listening)
            log.info("ready: microphone open, models loaded", extra=_event("ready"))
        else:
            self.notifier.status(self._listening)

    def idle(self) -> None:
        if not self.ready:
            self.ready = True
            self.notifier.ready("muted: microphone closed")
            log.info("ready: models loaded, microphone closed (muted)", extra=_event("ready"))
        if self.watchdog is not None:
            self.watchdog.idle()

    def on_event(self, event: object) -> None:
        if not isinstance(event, StateChanged):
            return
        if event.new == State.STOPPED:
            self._stop()
        elif event.new == State.MUTED:
            self.notifier.status("muted: microphone closed")
        elif event.new == State.LISTENING:
            self.notifier.status(self._listening)
        else:
            self.notifier.status(str(event.new))

    def _stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping()

    def close(self) -> None:
        self._stop()
        self.notifier.close()


def _event(name: str) -> dict[str, Any]:
    from edge.service.logs import fields

    return fields(event=name)
