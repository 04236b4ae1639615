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

import contextlib
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import Config
from edge.errors import EdgeError

SERVICE = "edge-recorder.service"
CHECKS = ("models", "audio", "mute", "leds", "broker", "disk", "clock", "cpu")
MIN_YEAR = 2024
RESERVE_MB = 100.0
"""Free space kept beyond the outbox bound: clips, the activation log, the journal."""
TIMESYNC_CLOCK = Path("/var/lib/systemd/timesync/clock")
"""systemd-timesyncd touches this at every sync: its mtime is the last known good time."""


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    """What was found, in a sentence or two."""
    fix: str = ""
    """What to do about it; always set for a failure."""


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def warn(check: str, detail: str, fix: str = "") -> Finding:
    return Finding(check, Status.WARN, detail, fix)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.FAIL, detail, fix)


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


@dataclass
class Doctor:
    cfg: Config
    pa_factory: Any = None
    """PyAudio factory for the audio check; None is the real PortAudio."""
    pin_factory: Any = None
    """gpiozero pin factory; None builds the configured one (hardware.pin_factory)."""
    disk_usage: Callable[[str], Any] = shutil.disk_usage
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
        if f.status is Status.FAIL and f.check in ("audio", "mute", "leds"):
            return Finding(f.check, f.status, f.detail,
                           f"{SERVICE} is running and holds the microphone and the pins: "
                           "stop it first (sudo systemctl stop edge-recorder), run the doctor, "
                           f"then start it again. {f.fix}")
        return f

    # ---- models ---------------------------------------------------------------------

    def check_models(self) -> Iterator[Finding]:
        from edge.app import model_store

        store = model_store(self.cfg.wake)
        manifest = store.manifest
        needed = [n for n in manifest.names() if manifest.entry(n).kind != "wakeword"]
        custom = [m for m in self.cfg.wake.models if m.endswith(".onnx") or os.sep in m]
        needed += [m for m in self.cfg.wake.models if m not in custom]
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

    # ---- audio ----------------------------------------------------------------------

    def check_audio(self) -> Iterator[Finding]:
        from edge.audio.capture import PyAudioSource
        from edge.engine import FRAME_SAMPLES, SAMPLE_RATE
        from edge.errors import AudioDeviceError, AudioFormatError
        from edge.hardware.profiles import apply_audio

        audio = apply_audio(self.cfg).audio
        if audio.input and (Path(audio.input).suffix.lower() in (".wav", ".flac")
                            or Path(audio.input).is_file()):
            yield warn("audio", f"audio.input = {audio.input!r} is a file: the service replays "
                                "it instead of listening",
                       "set audio.input to a capture device (see `edge devices`), or '' for "
                       "the default one")
            return
        src = PyAudioSource(audio.input, audio.channel, audio.rate, pa_factory=self.pa_factory,
                            stall_timeout_s=2.0)
        want = max(2, round(self.audio_s * SAMPLE_RATE / FRAME_SAMPLES))
        try:
            dev = src.check()
            src.start()
            frames = [src.read()]  # the rate is timed from the first frame: opening is slow
            t0 = time.monotonic()
            frames += [src.read() for _ in range(want - 1)]
            elapsed = max(time.monotonic() - t0, 1e-6)
        except (AudioDeviceError, AudioFormatError) as exc:
            yield fail("audio", str(exc), "check the microphone is plugged in and listed by "
                       "`edge devices` (as a user in the audio group: sudo -u edge-recorder), "
                       "and audio.input, audio.channel and audio.rate; a HAT needs its driver "
                       "(README: Troubleshooting)")
            return
        finally:
            src.stop()
        got_s = (len(frames) - 1) * FRAME_SAMPLES / SAMPLE_RATE
        ratio = got_s / elapsed
        samples = np.concatenate(frames)
        peak = int(np.abs(samples.astype(np.int32)).max())
        where = f"{dev.describe()}, channel {'average' if audio.channel < 0 else audio.channel}"
        if ratio < 0.9:
            yield fail("audio", f"{where} delivered {got_s:.1f} s of audio in {elapsed:.1f} s "
                                f"({ratio:.0%} of real time): the service would fall behind",
                       "check the sample rate (audio.rate = 0 takes the device's own), USB power "
                       "(a powered hub or the official supply) and `dmesg` for xruns or resets")
            return
        if peak == 0:
            yield fail("audio", f"{where} delivers only digital silence (every sample is 0)",
                       "the capture path is switched off or muted: open `alsamixer -c <card>`, "
                       "press F4 and raise or unmute the capture controls (ReSpeaker 2-Mic: "
                       "'Left/Right Input Mixer Boost' on, 'Capture' up), then `sudo alsactl "
                       "store`")
            return
        if np.all(samples == samples[0]):
            yield fail("audio", f"{where} delivers a constant value ({int(samples[0])}): the "
                                "converter is stuck",
                       "reload the driver (reboot); check the HAT is seated and its overlay "
                       "matches the board (README: Troubleshooting)")
            return
        dbfs = 20 * np.log10(peak / 32768.0)
        rate = f"{ratio:.2f}x real time" if ratio < 1.5 else "faster than real time (buffered)"
        detail = f"{where}: {len(frames)} frames in {elapsed:.1f} s ({rate}), peak {dbfs:.0f} dBFS"
        if dbfs < -70:
            yield warn("audio", detail + ": very quiet, a wake word may not be heard",
                       "raise the capture gain in alsamixer, or move the microphone closer")
            return
        overflows = src.overflows
        yield ok("audio", detail + (f", {overflows} overflow(s)" if overflows else ""))

    # ---- hardware -------------------------------------------------------------------

    @contextlib.contextmanager
    def _factory(self, spec: Any) -> Iterator[Any]:
        if self.pin_factory is not None:
            yield self.pin_factory
            return
        from edge.hardware.pins import make_factory

        factory = make_factory(spec.pin_factory)
        try:
            yield factory
        finally:
            with contextlib.suppress(Exception):
                factory.close()

    def _spec(self) -> Any:
        from edge.hardware.profiles import resolve

        return resolve(self.cfg.hardware)

    def check_mute(self) -> Iterator[Finding]:
        from edge.hardware.mute import MuteSwitch
        from edge.hardware.pins import hardware_error

        spec = self._spec()
        if spec.mute is None:
            board = ("set hardware.profile to your board" if spec.profile.name == "no-gpio"
                     else f"see hardware/{spec.profile.name}/README.md")
            yield warn("mute", f"no mute switch (hardware.mute_pin = 'none', profile "
                               f"{spec.profile.name}): only a soft mute can stop listening",
                       f"wire a switch and set hardware.mute_pin ({board})")
            return
        fix = (f"check hardware.mute_pin and the wiring in hardware/{spec.profile.name}/"
               "README.md; `edge hardware profiles` lists the pins each board uses")
        try:
            with self._factory(spec) as factory:
                switch = MuteSwitch(spec.mute, spec.mute_pull, spec.mute_active_high,
                                    spec.mute_bounce_s, factory, lambda _m: None)
                try:
                    muted = switch.read()
                finally:
                    switch.close()
        except EdgeError as exc:
            yield fail("mute", str(exc), fix)
            return
        except Exception as exc:  # gpiozero and the pin libraries raise their own types
            yield fail("mute", str(hardware_error(spec.mute.key, spec.mute.text, exc)), fix)
            return
        level = "high" if muted == spec.mute_active_high else "low"
        state = ("MUTED: the service will not listen until the switch is moved" if muted
                 else "listening")
        yield ok("mute", f"mute switch on {spec.mute} (pull {spec.mute_pull}) reads {level}: "
                         f"{state}")

    def check_leds(self) -> Iterator[Finding]:
        from edge.hardware.indicators import Look, build_indicator

        spec = self._spec()
        if spec.leds == "none":
            yield ok("leds", f"no indicator fitted (profile {spec.profile.name})")
            return
        where = (f"{spec.led_count} APA102 pixel(s) on SPI0" if spec.leds == "apa102"
                 else ", ".join(str(p) for p in spec.led_pins))
        try:
            with self._factory(spec) as factory:
                indicator = build_indicator(spec, factory)
                try:
                    indicator.show(Look.RECORDING)
                    time.sleep(self.led_on_s)
                    indicator.show(Look.OFF)
                finally:
                    indicator.close()
        except EdgeError as exc:
            yield fail("leds", str(exc),
                       f"check hardware.leds and its pins against hardware/{spec.profile.name}/"
                       "README.md")
            return
        yield ok("leds", f"{spec.leds} indicator on {where}: lit for {self.led_on_s:g} s and "
                         "turned off (if you saw nothing, check its wiring and "
                         "hardware.led_active_high)")

    # ---- broker ---------------------------------------------------------------------

    def check_broker(self) -> Iterator[Finding]:
        from edge.mqtt.topics import BrokerSettings

        brokers = []
        if self.cfg.upload.mode == "mqtt":
            u = self.cfg.upload.mqtt
            brokers.append((BrokerSettings(u.host, u.port, u.tls, u.ca, u.cert, u.key,
                                           u.username, u.password_file, u.protocol,
                                           key_prefix="upload.mqtt"),
                            min(u.timeout_s, 10.0)))
        if self.cfg.mqtt.enabled:
            brokers.append((BrokerSettings.from_config(self.cfg.mqtt), 10.0))
        if not brokers:
            yield ok("broker", "no broker configured (upload.mode is not 'mqtt' and mqtt is not "
                               "enabled)")
            return
        for settings, timeout in brokers:
            yield probe_broker(settings, timeout)

    # ---- disk -----------------------------------------------------------------------

    def check_disk(self) -> Iterator[Finding]:
        from edge.places import outbox_dir

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
        from edge.app import build_detector, model_store
        from edge.engine import FRAME_SAMPLES, SAMPLE_RATE
        from edge.vad import SileroVad

        store = model_store(self.cfg.wake)
        detector = build_detector(self.cfg.wake, store)
        vad = SileroVad.load(store.path("silero_vad"))
        frames = busy_audio(self.cpu_s)
        cpu0, t0 = time.process_time(), self.perf()
        for frame in frames:
            detector.engine.process(frame)
            vad.speech_probability(frame)
        elapsed, cpu = self.perf() - t0, time.process_time() - cpu0
        audio_s = len(frames) * FRAME_SAMPLES / SAMPLE_RATE
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
    from edge.engine import FRAME_SAMPLES, SAMPLE_RATE

    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))
    x = rng.normal(0.0, 3000.0, n * FRAME_SAMPLES)
    x = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return [x[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(n)]


def probe_broker(s: Any, timeout: float) -> Finding:
    """Connect to the broker once (TLS as configured), wait for CONNACK, disconnect."""
    from edge.destinations import is_loopback, reason
    from edge.mqtt.client import new_client

    where = f"{'mqtts' if s.tls else 'mqtt'}://{s.host}:{s.port} ({s.key_prefix})"
    try:
        client = new_client(s, f"edge-doctor-{os.getpid()}")
    except EdgeError as exc:
        return fail("broker", f"{where}: {exc}", f"fix {s.key_prefix}.ca, .cert, .key and "
                    ".password_file")
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout
    try:
        client.connect(s.host, s.port, keepalive=30)
    except ssl.SSLCertVerificationError as exc:
        return fail("broker", f"{where}: the broker's TLS certificate is not trusted "
                              f"({exc.verify_message})",
                    f"set {s.key_prefix}.ca to the CA certificate (PEM) that signed the broker's "
                    "certificate, and check the host name matches it")
    except (ssl.SSLError, ConnectionResetError) as exc:
        if not isinstance(exc, ssl.SSLError) and not s.tls:
            return fail("broker", f"{where}: the broker closed the connection ({reason(exc)})",
                        f"check {s.key_prefix}.tls matches the port (8883 is TLS, 1883 plain)")
        why = getattr(exc, "reason", None) or reason(exc)
        return fail("broker", f"{where}: TLS handshake failed ({why})",
                    f"check {s.key_prefix}.tls matches the port (8883 is TLS, 1883 plain), "
                    "and the client certificate if the broker asks for one")
    except (OSError, ValueError) as exc:
        return fail("broker", f"{where}: cannot connect ({reason(exc)})",
                    f"check {s.key_prefix}.host and .port, that the broker runs, and that no "
                    "firewall blocks it")
    client.loop_start()
    try:
        if not done.wait(timeout):
            return fail("broker", f"{where}: connected, but no MQTT answer (CONNACK) within "
                                  f"{timeout:g} s",
                        f"check {s.key_prefix}.port is an MQTT port and {s.key_prefix}.tls "
                        "matches it")
        rc = result["rc"]
        if rc.is_failure:
            return fail("broker", f"{where}: the broker refused the connection ({rc})",
                        f"check {s.key_prefix}.username and {s.key_prefix}.password_file, and "
                        "the broker's ACL")
        tls = ""
        sock = client.socket()
        if isinstance(sock, ssl.SSLSocket):
            tls = f", {sock.version()}, certificate verified"
        if not s.tls and not is_loopback(s.host):
            return warn("broker", f"{where}: connected WITHOUT TLS: metadata (and clips, for "
                                  "upload) cross the network unencrypted",
                        f"set {s.key_prefix}.tls = true and port 8883 on a TLS listener")
        return ok("broker", f"{where}: connected{tls}, MQTT {s.protocol}")
    finally:
        client.disconnect()
        client.loop_stop()


def render(findings: list[Finding]) -> str:
    """The report a person reads: one block per finding, failures with their fix."""
    marks = {Status.OK: "ok  ", Status.WARN: "WARN", Status.FAIL: "FAIL"}
    lines = []
    for f in findings:
        lines.append(f"{marks[f.status]}  {f.check:<7} {f.detail}")
        if f.fix and f.status is not Status.OK:
            lines.append(f"      {'':<7} fix: {f.fix}")
    failed = sum(f.status is Status.FAIL for f in findings)
    warned = sum(f.status is Status.WARN for f in findings)
    lines.append("")
    lines.append(f"{len(findings)} checks: {failed} failed, {warned} warning(s)"
                 + ("" if failed else "; the service can run"))
    return "\n".join(lines) + "\n"
