"""``edge doctor``: check the device the service runs on, and say how to fix what is wrong.

Each check uses the real part the service would use: the capture device through
``PyAudioSource``, the models through ``ModelStore``, the mute switch and LEDs
through the hardware module on the configured pin factory, the broker through
paho with the configured TLS, and the wake-word engine itself for the CPU
headroom. A check returns ``Finding``s: ok, warn (works, but look at it) or
fail (the service would not work as configured); every failure carries its fix.

>>> findings = Doctor(load_config(path)).run()
>>> [f for f in findings if f.status is Status.FAIL]     # empty on a healthy device

Every seam a test needs comes in through the constructor: the PyAudio factory,
the gpiozero pin factory, ``disk_usage``, the wall clock, the NTP status and the
timer of the CPU measurement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.config import Config
from edge.service.assist_check import check_assist
from edge.service.broker_check import check_broker
from edge.service.device_checks import (
    HELD_BY_SERVICE,
    audio_held_by_mute,
    check_audio,
    check_leds,
    check_mute,
)
from edge.service.findings import Finding, Status, fail, ok, render, warn
from edge.service.opt_outs import check_opt_outs

if TYPE_CHECKING:
    from gpiozero import Factory

    from edge.audio.portaudio import PyAudioFactory
    from edge.hardware.profiles import HardwareSpec

__all__ = ["CHECKS", "Doctor", "Finding", "Status", "busy_audio", "fail", "ok", "render", "warn"]

SERVICE = "edge-recorder.service"
CHECKS = ("security", "models", "audio", "mute", "leds", "broker", "assist", "disk", "clock",
          "cpu")
MIN_YEAR = 2024
RESERVE_MB = 100.0
"""Free space kept beyond the outbox bound: clips, the activation log, the journal."""
TIMESYNC_CLOCK = Path("/var/lib/systemd/timesync/clock")
"""systemd-timesyncd touches this at every sync: its mtime is the last known good time."""


def ntp_synchronized() -> bool | None:
    """What systemd-timesyncd (or chrony, through timedated) says; None when unknown."""
    if not shutil.which("timedatectl") or not os.path.isdir("/run/systemd/system"):
        return None
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value)


def service_active() -> bool | None:
    """Whether the service runs now (and so holds the microphone and the pins)."""
    if not shutil.which("systemctl") or not os.path.isdir("/run/systemd/system"):
        return None
    try:
        out = subprocess.run(["systemctl", "is-active", SERVICE], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() in ("active", "activating", "reloading")


class DiskUsage(Protocol):
    """What the disk check reads of ``shutil.disk_usage``."""

    @property
    def free(self) -> float: ...


@dataclass
class Doctor:
    cfg: Config
    pa_factory: PyAudioFactory | None = None
    """PyAudio factory for the audio check; None is the real PortAudio."""
    pin_factory: Factory | None = None
    """gpiozero pin factory; None builds the configured one (hardware.pin_factory)."""
    disk_usage: Callable[[str], DiskUsage] = shutil.disk_usage
    now: Callable[[], float] = time.time
    ntp: Callable[[], bool | None] = ntp_synchronized
    perf: Callable[[], float] = time.perf_counter
    service: Callable[[], bool | None] = service_active
    audio_s: float = 2.0
    """Seconds of audio read from the microphone."""
    cpu_s: float = 5.0
    """Seconds of audio the engine is timed over."""
    led_on_s: float = 0.5
    last_known_time: list[Path] = field(default_factory=lambda: [TIMESYNC_CLOCK])
    _models_ok: bool = field(default=True, init=False)
    _service_running: bool | None = field(default=None, init=False)

    def run(self, only: Iterable[str] = CHECKS) -> list[Finding]:
        self._service_running = self.service()
        findings: list[Finding] = []
        for name in only:
            check: Callable[[], Iterator[Finding]] = getattr(self, f"check_{name}")
            try:
                findings.extend(check())
            except Exception as exc:  # a check that breaks is itself a finding, not a crash
                findings.append(fail(name, f"the check itself failed: {type(exc).__name__}: "
                                           f"{exc}", "report this as a bug, with this output"))
        if self._service_running:
            findings = [self._busy_hint(f) for f in findings]
        return findings

    def _busy_hint(self, f: Finding) -> Finding:
        if f.status is Status.FAIL and f.check in HELD_BY_SERVICE:
            return Finding(f.check, f.status, f.detail,
                           f"{SERVICE} is running and holds the microphone and the pins: "
                           "stop it first (sudo systemctl stop edge-recorder), run the doctor, "
                           f"then start it again. {f.fix}")
        return f

    def check_security(self) -> Iterator[Finding]:
        return check_opt_outs(self.cfg)

    # ---- models ---------------------------------------------------------------------

    def check_models(self) -> Iterator[Finding]:
        from edge.wake.detector import model_store

        store = model_store(self.cfg.wake)
        manifest = store.manifest
        needed = [n for n in manifest.names()
                  if manifest.entry(n).kind not in ("wakeword", "micro")]  # the shared parts
        custom = [m for m in self.cfg.wake.models
                  if m.endswith((".onnx", ".tflite", ".json")) or os.sep in m]
        needed += [store.full_name(m) for m in self.cfg.wake.models if m not in custom]
        bad = []
        for name in needed:
            st = store.status(name)
            if st.state != "ok":
                bad.append(f"{name} is {st.state} ({st.path})")
        for path in custom:
            if not Path(path).expanduser().is_file():
                bad.append(f"the custom model {path} does not exist")
        self._models_ok = not bad
        if bad:
            yield fail("models", "; ".join(bad),
                       f"run `sudo edge models fetch --dir {store.directory}` (it downloads the "
                       "pinned wheel and verifies every file), or re-run install.sh; a custom "
                       "model: fix wake.models")
            return
        yield ok("models", f"{len(needed) + len(custom)} models present in {store.directory}, "
                           "sha256 verified against the manifest")

    # ---- the parts the service holds, and the brokers: device_checks.py, broker_check.py ----

    def check_audio(self) -> Iterator[Finding]:
        held = audio_held_by_mute(self._spec(), self.pin_factory)  # before any microphone
        if held is not None:
            return iter([held])
        return check_audio(self.cfg, self.pa_factory, self.audio_s)

    def check_mute(self) -> Iterator[Finding]:
        return check_mute(self._spec(), self.pin_factory)

    def check_leds(self) -> Iterator[Finding]:
        return check_leds(self._spec(), self.pin_factory, self.led_on_s)

    def _spec(self) -> HardwareSpec:
        from edge.hardware.profiles import resolve

        return resolve(self.cfg.hardware)

    def check_broker(self) -> Iterator[Finding]:
        return check_broker(self.cfg)

    def check_assist(self) -> Iterator[Finding]:
        return check_assist(self.cfg, self._service_running)

    # ---- disk -----------------------------------------------------------------------

    def check_disk(self) -> Iterator[Finding]:
        from edge.privacy.places import outbox_dir

        outbox = outbox_dir(self.cfg)
        probe = outbox
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = self.disk_usage(str(probe))
        free_mb = usage.free / 1e6
        bound = self.cfg.upload.outbox_max_mb if self.cfg.upload.mode != "off" else 0.0
        need = bound + RESERVE_MB
        what = (f"the outbox ({outbox}) may grow to {bound:g} MB" if bound
                else "upload is off (no outbox)")
        if free_mb < need:
            yield fail("disk", f"{free_mb:.0f} MB free on the file system of {probe}; {what} and "
                               f"{RESERVE_MB:g} MB more are kept for clips and logs",
                       "free space (`sudo apt clean`, `sudo journalctl --vacuum-size=50M`, "
                       "delete old clips with `edge purge`), use a larger SD card, or lower "
                       f"upload.outbox_max_mb to at most {max(free_mb - RESERVE_MB, 1):.0f}")
            return
        if outbox.exists() and not os.access(outbox, os.W_OK):
            yield fail("disk", f"{outbox} is not writable by this user", "run the doctor as the "
                       "service's user (sudo -u edge-recorder edge doctor); if it fails there "
                       "too: sudo chown -R edge-recorder: /var/lib/edge-recorder")
            return
        yield ok("disk", f"{free_mb:.0f} MB free for {outbox}; {what}")

    # ---- clock ----------------------------------------------------------------------

    def check_clock(self) -> Iterator[Finding]:
        now = self.now()
        year = time.gmtime(now).tm_year
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
        if year < MIN_YEAR:
            yield fail("clock", f"the clock says {stamp}: it was never set (the Pi has no "
                                "battery-backed clock and NTP has not synchronised)",
                       "connect the network and wait, or check `timedatectl timesync-status`; "
                       "without a network: sudo date -s 'YYYY-MM-DD HH:MM'")
            return
        known = [(p, p.stat().st_mtime) for p in self._known_times() if p.exists()]
        if known:
            path, last = max(known, key=lambda k: k[1])
            if now < last - 300:
                behind = (last - now) / 3600
                yield fail("clock", f"the clock says {stamp}, {behind:.1f} h before the last "
                                    f"known time ({path}): it went backwards",
                           "let NTP synchronise (network, `timedatectl timesync-status`); clip "
                           "times and TLS certificate checks depend on it")
                return
        synced = self.ntp()
        if synced is None:
            yield warn("clock", f"{stamp}; cannot tell whether NTP synchronised "
                                "(no timedatectl or no systemd)",
                       "on the Pi: `timedatectl` should say 'System clock synchronized: yes'")
        elif not synced:
            yield warn("clock", f"{stamp}, not synchronised by NTP yet: clip times may be off",
                       "check the network; `timedatectl timesync-status` shows the server")
        else:
            yield ok("clock", f"{stamp}, synchronised by NTP")

    def _known_times(self) -> list[Path]:
        import edge

        return [*self.last_known_time, Path(edge.__file__)]

    # ---- cpu ------------------------------------------------------------------------

    def check_cpu(self) -> Iterator[Finding]:
        if not self._models_ok:
            yield fail("cpu", "not measured: the models are missing or corrupt",
                       "fix the models first (see the models finding)")
            return
        from edge.audio.frames import FRAME_S
        from edge.wake.detector import build_detector, model_store
        from edge.wake.models import VAD_MODEL
        from edge.wake.vad import SileroVad

        store = model_store(self.cfg.wake)
        detector = build_detector(self.cfg.wake, store)
        vad = SileroVad.load(store.path(VAD_MODEL), self.cfg.wake.runtime)
        frames = busy_audio(self.cpu_s)
        cpu0, t0 = time.process_time(), self.perf()
        for frame in frames:
            detector.engine.process(frame)
            vad.speech_probability(frame)
        elapsed, cpu = self.perf() - t0, time.process_time() - cpu0
        audio_s = len(frames) * FRAME_S
        rtf = elapsed / audio_s
        detail = (f"real-time factor {rtf:.3f}: {audio_s:.0f} s of audio through "
                  f"{', '.join(detector.names)} and the VAD in {elapsed:.2f} s "
                  f"({cpu:.2f} s of CPU), {max(0.0, 1 - rtf):.0%} headroom on one core")
        fix = ("listen for fewer wake words (wake.models), keep wake.idle_gate on, stop other "
               "busy programs (`top`), or use a faster board")
        if rtf >= 0.8:
            yield fail("cpu", detail + ": too little headroom to keep up", fix)
        elif rtf >= 0.5:
            yield warn("cpu", detail + ": little headroom", fix)
        else:
            yield ok("cpu", detail)


def busy_audio(seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Loud noise: the worst case, where the idle gate never skips a frame."""
    from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE

    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))
    x = rng.normal(0.0, 3000.0, n * FRAME_SAMPLES)
    x = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return [x[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(n)]
