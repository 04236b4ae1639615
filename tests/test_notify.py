"""systemd notifications: the sd_notify protocol on a real unix socket, readiness, the watchdog.

Each test binds its own datagram socket (a path, or an abstract name) and reads
exactly what systemd would receive.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource
from edge.config import Config, OutputConfig
from edge.errors import AudioDeviceError
from edge.pipeline.daemon import Daemon
from edge.service.systemd import Notifier, SystemdPlugin, Watchdog, watchdog_timeout
from tests.device import build
from tests.fixtures.wake import wake_stream


class NotifySocket:
    """What systemd listens on: a unix datagram socket; ``messages()`` reads what arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)

    def messages(self) -> list[dict[str, str]]:
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(str(tmp_path / "notify"))
    yield s
    s.sock.close()


class TickClock:
    """A monotonic clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float = 0.08) -> None:
        self.t = 100.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


# ---- the protocol ---------------------------------------------------------------------


def test_notifier_sends_one_datagram_per_message_to_a_socket_path(notify_socket):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.address})
    assert n is not None
    assert n.ready("listening for hey_jarvis")
    assert n.watchdog()
    assert n.stopping()
    assert notify_socket.messages() == [
        {"READY": "1", "STATUS": "listening for hey_jarvis"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]


def test_notifier_reaches_an_abstract_namespace_socket():
    s = NotifySocket(f"@edge-test-{uuid.uuid4().hex}")
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": s.address})
        assert n is not None and n.status("muted: microphone closed")
        assert s.messages() == [{"STATUS": "muted: microphone closed"}]
    finally:
        s.sock.close()


def test_no_notify_socket_means_no_notifier():
    assert Notifier.from_env({}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert SystemdPlugin.from_env(("hey_jarvis",), {}) is None


def test_a_vanished_socket_is_counted_not_raised(tmp_path):
    n = Notifier(str(tmp_path / "gone"))
    assert not n.watchdog()
    assert n.failed == 1


def test_watchdog_timeout_comes_from_watchdog_usec_for_this_process_only():
    me = str(os.getpid())
    assert watchdog_timeout({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_timeout({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": me}) == 20.0
    assert watchdog_timeout({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_timeout({}) is None


# ---- the watchdog rule ----------------------------------------------------------------


def test_watchdog_pings_every_half_timeout_while_frames_arrive_in_real_time():
    pings: list[int] = []
    clock = TickClock(0.08)  # one read per frame: exactly real time
    wd = Watchdog(lambda: pings.append(1), timeout_s=2.0, monotonic=clock)
    wd.started()
    for _ in range(125):  # 10 s of audio
        wd.frame()
    assert wd.interval_s == 1.0
    assert len(pings) == 9  # a ping each second after the first window
    assert wd.late_windows == 0


def test_watchdog_stays_silent_when_capture_stalls():
    pings: list[int] = []
    clock = TickClock(0.08)
    wd = Watchdog(lambda: pings.append(1), timeout_s=2.0, monotonic=clock)
    wd.started()
    for _ in range(20):
        wd.frame()
    before = len(pings)
    clock.t += 30.0  # no frame for 30 s: nothing calls the watchdog, nothing is sent
    assert len(pings) == before
    wd.frame()  # and the frame that finally comes after the stall is late: still no ping
    assert len(pings) == before
    assert wd.late_windows == 1


def test_watchdog_does_not_ping_for_audio_arriving_at_a_fraction_of_real_time():
    pings: list[int] = []
    clock = TickClock(0.24)  # a frame every 240 ms: a third of real time
    wd = Watchdog(lambda: pings.append(1), timeout_s=2.0, monotonic=clock)
    wd.started()
    for _ in range(50):
        wd.frame()
    assert pings == []
    assert wd.late_windows >= 10


def test_watchdog_pings_from_the_idle_loop_while_muted():
    pings: list[int] = []
    clock = TickClock(0.05)  # the idle loop wakes every 50 ms
    wd = Watchdog(lambda: pings.append(1), timeout_s=2.0, monotonic=clock)
    for _ in range(200):  # 10 s muted
        wd.idle()
    assert len(pings) == 10


# ---- in the daemon ----------------------------------------------------------------------


def daemon_with(source, tmp_path: Path, notifier: Notifier,  # type: ignore[no-untyped-def]
                **kw) -> tuple[Daemon, SystemdPlugin]:
    """The daemon as ``edge run`` builds it, with its systemd notifier on ``notifier``."""
    cfg = Config(state_dir=str(tmp_path / "state"), output=OutputConfig(keep_local=False))
    device = build(cfg, source, systemd=lambda models: SystemdPlugin(notifier, models, **kw))
    assert device.systemd is not None
    return device.daemon, device.systemd


def test_daemon_says_ready_after_the_microphone_opens_then_pings_then_stops(
        store, tmp_path, notify_socket):
    opened: list[str] = []

    class Mic(ArraySource):
        def start(self) -> None:
            super().start()
            opened.append("start")

    daemon, _ = daemon_with(Mic(wake_stream(6.0), name="test mic"), tmp_path,
                            Notifier(notify_socket.address), watchdog_s=2.0,
                            monotonic=TickClock(0.08))
    assert notify_socket.messages() == []  # models loaded, microphone not yet open: not ready
    daemon.run(install_signals=False)
    msgs = notify_socket.messages()
    assert opened == ["start"]
    assert msgs[0] == {"READY": "1", "STATUS": "listening for hey_jarvis"}
    pings = [m for m in msgs if m == {"WATCHDOG": "1"}]
    assert len(pings) == 5  # 6 s of audio at real time, one ping a second after the first
    assert {"STOPPING": "1", "STATUS": "stopping"} in msgs
    assert sum("READY" in m for m in msgs) == 1
    assert {k for m in msgs for k in m} <= {"READY", "STATUS", "WATCHDOG", "STOPPING"}


def test_daemon_never_says_ready_while_the_microphone_cannot_be_opened(
        store, tmp_path, notify_socket):
    attempts: list[int] = []

    class DeadMic(ArraySource):
        def start(self) -> None:
            attempts.append(1)
            raise AudioDeviceError("capture device 'usb' is busy")

    daemon, _ = daemon_with(DeadMic(np.zeros(FRAME_SAMPLES, np.int16)), tmp_path,
                            Notifier(notify_socket.address), watchdog_s=2.0)
    daemon.runner._sleep = lambda s: daemon.runner._stop.wait(0.01)
    t = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    t.start()
    while len(attempts) < 5:
        t.join(0.01)
    daemon.stop()
    t.join(10)
    msgs = notify_socket.messages()
    assert not any("READY" in m or "WATCHDOG" in m for m in msgs)
    assert {"STOPPING": "1", "STATUS": "stopping"} in msgs


def test_daemon_started_muted_is_ready_with_the_microphone_closed_and_keeps_pinging(
        store, tmp_path, notify_socket):
    src = ArraySource(wake_stream(6.0), name="test mic")
    daemon, plugin = daemon_with(src, tmp_path, Notifier(notify_socket.address),
                                 watchdog_s=0.2, monotonic=TickClock(0.05))
    daemon.post(lambda rec: rec.mute("switch"))
    t = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    t.start()
    while plugin.watchdog is not None and plugin.watchdog.pings < 3:
        t.join(0.01)
    daemon.stop()
    t.join(10)
    msgs = notify_socket.messages()
    ready = [m for m in msgs if "READY" in m]
    assert ready == [{"READY": "1", "STATUS": "muted: microphone closed"}]
    assert msgs.index(ready[0]) < msgs.index({"WATCHDOG": "1"})
    assert msgs.count({"WATCHDOG": "1"}) >= 3
    assert not src.started  # the microphone was never opened
