"""The installed service under a booted systemd: ``install.sh`` inside a Debian container that
runs its own systemd (``tests/nspawn_root.py``), then the unit as systemd really runs it.

One container for the module; the tests run in order, as an operator's day would: install
and start, readiness gated on the microphone, the user and sandbox it runs in, a wake word
kept under its ``StateDirectory`` and nothing written anywhere else, a capture that hangs
the audio loop and the watchdog restart, the exposure score, and ``systemctl stop``.

The microphone is a real ALSA capture device with no sound card: ``/etc/asound.conf`` in
the container makes ``default`` ALSA's ``file`` plugin reading its samples from a FIFO,
which ``FifoMicrophone`` here writes at a 44.1 kHz real-time pace (a USB microphone's rate:
the service's default config, as install.sh writes it, is used unchanged). It is what a
capture driver looks like to the service: a paced stream that can also stall. Stalling it
is how the test hangs the audio loop, with nothing test-only in the product: the reader
then blocks in ``read`` inside alsa-lib, the recorder notices the silence and tries to
reopen the device, and PortAudio's stop waits forever for that blocked thread, as it would
for a wedged USB driver. No code path, setting or environment variable exists to hang the
loop on purpose.

What the container cannot show: real ``/dev/snd``, ``/dev/gpiochip*`` and ``/dev/spidev*``
nodes (the default profile uses no GPIO); the cgroup-based settings in force (on this CI
host the container's systemd gets no devices controller and no BPF firewall, so
``DevicePolicy=``/``DeviceAllow=`` and the drop-in's ``IPAddressDeny=`` are loaded and
scored, not enforced); and a Pi's kernel and CPU.

Needs root (systemd-nspawn) and, the first time, the network (debootstrap, pip). ``make
test-systemd``; marked slow, so ``make test`` leaves it out.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soxr

from edge.wake.models import ModelStore
from tests.fixtures.wake import wake_stream
from tests.nspawn_root import Container, debian_root, wheelhouse
from tests.test_service import MAX_EXPOSURE
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parent.parent
UNIT = "edge-recorder.service"
SRC = "/usr/src/edge-recorder"  # the checkout, read-only inside
WHEELS = "/var/cache/edge-wheels"
MODELS = "/var/cache/edge-models"
STATE = "/var/lib/edge-recorder"  # StateDirectory=edge-recorder
RUNTIME = "/run/edge-recorder"  # RuntimeDirectory=edge-recorder
FIFO = "/srv/edge-mic/mic.fifo"
MIC_RATE = 44100

# The container's default ALSA device: capture reads the FIFO through the file plugin (over a
# one-channel null device, as tests/fixtures/alsa.py explains); playback, for the chimes, is
# a null device. Only the service's ALSA sees this file; no code of edge-recorder knows it.
ASOUND_CONF = f"""\
pcm.!default {{
  type asym
  playback.pcm {{ type null }}
  capture.pcm {{
    type file
    slave.pcm {{ type copy; slave.pcm {{ type multi; slaves.a.pcm {{ type null }}
      slaves.a.channels 1; bindings.0 {{ slave a; channel 0 }} }} }}
    file "/dev/null"
    infile "{FIFO}"
    format "raw"
  }}
}}
"""


class FifoMicrophone:
    """A mono int16 microphone at ``rate`` Hz: writes to the FIFO ALSA reads, in real time.

    ``plug`` opens the FIFO (read-write, so it never blocks or breaks when no reader is
    there, and the service's open of the device succeeds); ``unplug`` closes it, after which
    opening the device blocks as a missing one does. ``stall`` stops the samples with the
    device still open: a read then waits forever. ``say`` plays samples once, in place of
    the silence.
    """

    BLOCK_S = 0.08

    def __init__(self, fifo: Path, rate: int = MIC_RATE) -> None:
        self.fifo = fifo
        self.rate = rate
        self.flowing = threading.Event()
        self.flowing.set()
        self._closed = threading.Event()
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._thread: threading.Thread | None = None

    def plug(self) -> None:
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        self._closed.clear()
        self._thread = threading.Thread(target=self._run, name="fifo-microphone", daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def say(self, samples_16k: np.ndarray) -> None:
        audio = soxr.resample(samples_16k.astype(np.float32), 16000, self.rate)
        data = np.clip(np.round(audio), -32768, 32767).astype("<i2").tobytes()
        block = round(self.rate * self.BLOCK_S) * 2
        with self._lock:
            self._pending += [data[i:i + block] for i in range(0, len(data), block)]

    def _next_block(self, block: int) -> bytes:
        with self._lock:
            chunk = self._pending.pop(0) if self._pending else b""
        return chunk + bytes(block - len(chunk))

    def _run(self) -> None:
        block = round(self.rate * self.BLOCK_S) * 2
        due = time.monotonic()
        while not self._closed.is_set():
            if not self.flowing.is_set():
                self.flowing.wait(0.05)
                due = time.monotonic()
                continue
            self._write(self._next_block(block))
            # The device's clock: one block per 80 ms. Behind by more than a second (nobody
            # read while the service restarted) it starts afresh instead of bursting.
            due = max(due + self.BLOCK_S, time.monotonic() - 1.0)
            self._closed.wait(max(0.0, due - time.monotonic()))

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view and not self._closed.is_set():
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:  # the pipe is full: nobody is reading right now
                select.select([], [self._fd], [], 0.1)


@dataclass
class Booted:
    box: Container
    mic: FifoMicrophone
    install_output: str
    uid: int
    gids: dict[str, int]


def ids(box: Container, db: str) -> dict[str, int]:
    return {f[0]: int(f[2]) for f in (line.split(":") for line in
                                      box.path(f"/etc/{db}").read_text().splitlines()) if f[0]}


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, store: ModelStore) -> Iterator[Booted]:
    if os.geteuid() != 0:
        pytest.fail("booting a container needs root (systemd-nspawn): run `sudo make "
                    "test-systemd`")
    root = debian_root()
    wheels = wheelhouse(REPO)
    work = tmp_path_factory.mktemp("boot")
    box = Container(root, {REPO: SRC, wheels: WHEELS, store.directory: MODELS},
                    work / "console.log")
    mic = FifoMicrophone(box.path(FIFO))
    try:
        box.start()
        mic.fifo = box.path(FIFO)  # /proc/<the container's init>/root/...: known once started
        box.path(FIFO).parent.mkdir(parents=True)
        os.mkfifo(box.path(FIFO), 0o640)  # like /dev/snd: root's, readable by group audio
        os.chown(box.path(FIFO), 0, ids(box, "group")["audio"])
        box.path("/etc/asound.conf").write_text(ASOUND_CONF)
        mic.plug()
        install = box.run(f"{SRC}/install.sh", "--no-apt", "--models-from", MODELS,
                          "--pip-args", f"--no-index --find-links {WHEELS}", timeout=900)
        group = ids(box, "group")
        yield Booted(box, mic, install.stdout, ids(box, "passwd")["edge-recorder"],
                     {g: group[g] for g in ("edge-recorder", "audio", "gpio", "spi")})
    finally:
        mic.unplug()
        box.stop()


# ---- reading systemd's view -----------------------------------------------------------


def show(box: Container, *props: str) -> dict[str, str]:
    out = box.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(box: Container, invocation: str = "") -> list[str]:
    """The unit's journal lines (its own and systemd's about it), of one invocation if given."""
    out = box.run("journalctl", "--no-pager", "--output=json", f"--unit={UNIT}").stdout
    entries = [json.loads(line) for line in out.splitlines()]
    return [str(e.get("MESSAGE", "")) for e in entries
            if not invocation
            or invocation in (e.get("_SYSTEMD_INVOCATION_ID"), e.get("INVOCATION_ID"))]


def owned_by(top: Path, uid: int, skip: tuple[str, ...]) -> list[str]:
    """Every path under ``top`` (not following links) owned by ``uid``, as an absolute path
    inside ``top``; ``skip`` names top-level paths not to enter."""
    found = []
    for here, dirs, files in os.walk(top):
        rel = "/" + os.path.relpath(here, top).removeprefix(".").lstrip("/")
        dirs[:] = [d for d in dirs if os.path.join(rel, d) not in skip]
        for name in dirs + files:
            try:
                if os.lstat(os.path.join(here, name)).st_uid == uid:
                    found.append(os.path.join(rel, name))
            except FileNotFoundError:  # gone while we looked (a rotated journal file)
                continue
    return sorted(found)


def processes_of(box: Container, uid: int) -> list[str]:
    """The container's processes running as ``uid`` (its /proc has no procps to ask)."""
    found = []
    for entry in box.path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append(entry.name)
        except FileNotFoundError:
            continue
    return found


NOT_FILES = ("/proc", "/sys", SRC, WHEELS, MODELS)


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


# ---- the tests, in an operator's order ----------------------------------------------------


def test_install_sh_starts_the_service_and_systemd_waits_for_ready(booted):
    box = booted.box
    assert "edge-recorder is running: journalctl -u edge-recorder -f" in booted.install_output, \
        booted.install_output + "\n".join(journal(box))
    props = show(box, "Type", "NotifyAccess", "ActiveState", "SubState", "StatusText",
                 "InvocationID", "UnitFileState")
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    assert props["UnitFileState"] == "enabled"
    # Only sd_notify sets the status text; it came with READY=1 (the next test shows that
    # systemd waits for it).
    assert props["StatusText"] == "listening for hey_jarvis"
    assert "ready: microphone open, models loaded" in journal(box, props["InvocationID"])


def main_pid(box: Container) -> str:
    """The service's main process id inside the container, or '' when it has none."""
    pid = show(box, "MainPID")["MainPID"]
    return "" if pid == "0" else pid


def blocked_in(box: Container, pid: str) -> set[str]:
    """What each thread of ``pid`` is waiting in (the kernel's wchan)."""
    return {box.path(f"/proc/{pid}/task/{t}/wchan").read_text()
            for t in os.listdir(box.path(f"/proc/{pid}/task"))}


def test_without_its_microphone_it_stays_activating_until_the_device_opens(booted):
    box, mic = booted.box, booted.mic
    box.run("systemctl", "stop", UNIT)
    mic.unplug()
    try:
        box.run("systemctl", "start", "--no-block", UNIT)
        pid = wait_for(lambda: main_pid(box), 60, "the service's main process")
        # Opening the device waits for the FIFO's writer, as a capture open waits for a
        # device that is not there; the process runs, and systemd has no READY=1 yet.
        wait_for(lambda: "wait_for_partner" in blocked_in(box, pid), 60,
                 "the service to wait in opening its microphone")
        assert show(box, "ActiveState", "SubState") == {"ActiveState": "activating",
                                                       "SubState": "start"}
    finally:
        mic.plug()
    wait_for(lambda: show(box, "ActiveState")["ActiveState"] == "active", 120,
             "the service to be ready once its microphone opens")
    assert show(box, "MainPID", "StatusText") == {"MainPID": pid,
                                                 "StatusText": "listening for hey_jarvis"}


def test_it_runs_as_its_user_with_no_privileges(booted):
    box = booted.box
    pid = show(box, "MainPID")["MainPID"]
    status = dict(line.split(":", 1) for line in
                  box.path(f"/proc/{pid}/status").read_text().splitlines())
    uid, gids = booted.uid, booted.gids
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(gids["edge-recorder"])] * 4
    assert set(map(int, status["Groups"].split())) == set(gids.values())
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, cap
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # the unit's SystemCallFilter, in force


def test_a_wake_word_is_kept_under_its_state_directory_and_nothing_is_written_elsewhere(booted):
    box, mic = booted.box, booted.mic
    clips = box.path(f"{STATE}/clips")
    before = set(clips.glob("*.wav"))
    mic.say(wake_stream(4.0, at_s=0.5, request="what is the time"))
    [clip] = wait_for(lambda: sorted(set(clips.glob("*.wav")) - before), 90, "the clip")
    assert os.stat(clip).st_uid == booted.uid
    assert json.loads(clip.with_suffix(".json").read_text())["model"] == "hey_jarvis"

    # Everything its user owns, seen from inside its own mount namespace (its private /tmp,
    # /var/tmp and /dev/shm included) and from the container as a whole.
    pid = show(box, "MainPID")["MainPID"]
    own_view = owned_by(box.path(f"/proc/{pid}/root"), booted.uid, NOT_FILES)
    elsewhere = [p for p in own_view if not under(p, STATE)]
    # PortAudio's JACK client (libportaudio2 links libjack) keeps a database in /dev/shm:
    # the unit gives the service a /dev/shm of its own (TemporaryFileSystem=), gone at stop.
    assert [p for p in elsewhere if not under(p, "/dev/shm")] == [RUNTIME], elsewhere
    assert not any(box.path(RUNTIME).iterdir())  # the runtime directory stays empty
    container = owned_by(box.path("/"), booted.uid, NOT_FILES)
    assert [p for p in container if not under(p, STATE)] == [RUNTIME], container


def test_the_watchdog_restarts_the_service_when_its_audio_loop_hangs(booted):
    box, mic = booted.box, booted.mic
    first = show(box, "MainPID", "NRestarts", "InvocationID", "WatchdogTimestampMonotonic")
    wait_for(lambda: show(box, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
             != first["WatchdogTimestampMonotonic"], 60, "a watchdog ping")
    stalled = time.monotonic()
    mic.stall()
    try:
        wait_for(lambda: show(box, "NRestarts")["NRestarts"] != first["NRestarts"], 240,
                 "systemd to restart the service")
        restarted_after = time.monotonic() - stalled
    finally:
        mic.resume()
    old = journal(box, first["InvocationID"])
    # The loop saw the silence and went to reopen the device; stopping the stream then hung
    # on PortAudio's thread, blocked in the driver's read, and no ping came for 20 s.
    assert any(line.startswith("audio device lost") for line in old), old
    assert "Watchdog timeout (limit 20s)!" in " ".join(old), old
    assert any("Failed with result 'watchdog'" in line for line in old), old
    killed = any("timed out. Killing" in line for line in old)  # SIGTERM could not end it

    wait_for(lambda: show(box, "ActiveState")["ActiveState"] == "active", 120,
             "the restarted service to be ready")
    now = show(box, "MainPID", "NRestarts", "ActiveEnterTimestampMonotonic")
    assert now["MainPID"] != first["MainPID"]
    assert int(now["NRestarts"]) == int(first["NRestarts"]) + 1
    wait_for(lambda: int(show(box, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
             > int(now["ActiveEnterTimestampMonotonic"]), 60,
             "the restarted service's first watchdog ping")
    print(f"\nstall to restart: {restarted_after:.0f} s"
          f"{' (SIGKILL after TimeoutStopSec)' if killed else ''}")


SCORE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


def security_rows(text: str) -> tuple[list[str], float]:
    """`systemd-analyze security`'s table (rows, right-stripped) and overall score."""
    m = SCORE.search(text)
    assert m, text
    rows = [line.rstrip() for line in text.splitlines() if line.strip() and "→" not in line]
    return rows, float(m.group(1))


def test_the_exposure_inside_is_the_one_measured_outside(booted, tmp_path):
    inside = booted.box.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    # Outside, as tests/test_service.py measures it: offline, on the checkout's unit with the
    # drop-in install.sh added (the default config sends nothing: no-network.conf).
    both = tmp_path / UNIT
    both.write_text((REPO / "systemd" / UNIT).read_text() + "\n"
                    + (REPO / "systemd/no-network.conf").read_text())
    outside = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                              str(both)], capture_output=True, text=True, cwd=tmp_path).stdout
    rows_in, score_in = security_rows(inside)
    rows_out, score_out = security_rows(outside)
    assert rows_in == rows_out
    assert score_in == score_out <= MAX_EXPOSURE
    print(f"\nexposure inside: {score_in}")


def test_systemctl_stop_ends_it_cleanly(booted):
    box = booted.box
    invocation = show(box, "InvocationID")["InvocationID"]
    asked = time.monotonic()
    box.run("systemctl", "stop", UNIT, timeout=60)
    print(f"\nsystemctl stop took {time.monotonic() - asked:.1f} s")
    props = show(box, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                     "ExecMainStatus": "0"}  # 1: CLD_EXITED, by itself, with status 0
    lines = journal(box, invocation)
    assert "received SIGTERM: stopping" in lines
    assert any(line.startswith("stopped: ") for line in lines), lines
    assert not any("Killing" in line or "timed out" in line for line in lines), lines
    assert main_pid(box) == ""
    assert processes_of(box, booted.uid) == []
    assert not box.path(RUNTIME).exists()
    # After a wake, a watchdog kill, a restart and a stop: its user owns nothing anywhere
    # but its state directory.
    container = owned_by(box.path("/"), booted.uid, NOT_FILES)
    assert container and all(under(p, STATE) for p in container), container
