"""Soak: hours of audio through the live daemon, accelerated, with uploads, mutes and broker
restarts; RSS, open file descriptors and threads sampled throughout.

    python bench/soak.py --hours 24 --out bench/results/soak.json     # make soak
    python bench/soak.py --hours 0.25                                  # what the CI runs

The audio is synthesized once (espeak prose, a wake phrase and a request, silence and quiet
noise; about one minute) and looped. It goes through the real daemon, built by the
composition root with the real models and every subsystem the device runs: the hardware
(gpiozero MockFactory; the mute switch is toggled on its pin), the activation log, the
uploader to a real Mosquitto on a loopback port (restarted every ``--restart-every`` audio
seconds), and the MQTT device plugin.
Frames go as fast as the CPU allows.

Pass mark, measured between the end of the warm-up and the end of the run: RSS growth
under 5 MB, no growth in open file descriptors, no growth in threads. The figures go to
the ``--out`` JSON file; the process exits 1 if the pass mark is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.audio import synth  # noqa: E402
from edge.audio.frames import FRAME_S, FRAME_SAMPLES  # noqa: E402

log = logging.getLogger("soak")
RSS_LIMIT_KB = 5 * 1024
MUTE_PIN = 22  # the generic-usb profile: switch on GPIO22, muted while the pin is high


@dataclass
class Sample:
    audio_h: float
    wall_s: float
    rss_kb: int
    fds: int
    threads: int
    """threading.active_count()"""
    os_threads: int
    """Threads: in /proc/self/status (native ones too: onnxruntime, paho, sqlite)."""


def proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def last_half(samples: list[Any]) -> list[Any]:
    """The samples the slope is fitted to: the run's second half, without the sample taken
    after shutdown (every sample when there are too few)."""
    return samples[len(samples) // 2:-1] if len(samples) > 4 else samples


def rss_slope(samples: list[Sample]) -> dict[str, Any]:
    """Least-squares RSS slope (kB per audio hour) over ``samples`` (the soak's last half,
    without the sample taken after shutdown), the residuals' standard deviation (kB), the
    slope's standard error, and whether the RSS is flat: the slope within two standard
    errors of zero (its 95 % confidence interval holds zero), i.e. within the noise."""
    if len(samples) < 3:
        return {"rss_slope_last_half_kb_per_h": 0.0, "rss_noise_last_half_kb": 0.0,
                "rss_slope_stderr_kb_per_h": 0.0, "rss_flat_last_half": True}
    h = np.array([s.audio_h for s in samples])
    kb = np.array([s.rss_kb for s in samples], dtype=float)
    slope, icept = np.polyfit(h, kb, 1)
    residuals = kb - (slope * h + icept)
    stderr = float(np.sqrt(np.sum(residuals ** 2) / (len(h) - 2) / np.sum((h - h.mean()) ** 2)))
    return {"rss_slope_last_half_kb_per_h": round(float(slope), 2),
            "rss_noise_last_half_kb": round(float(np.std(residuals)), 1),
            "rss_slope_stderr_kb_per_h": round(stderr, 2),
            "rss_flat_last_half": bool(abs(slope) <= 2.0 * stderr),
            "rss_last_half_span_h": round(float(h[-1] - h[0]), 3)}


class SampleLog:
    """The samples, in an array allocated before the run: a list of objects growing by
    twelve an hour would be a few kB an hour of the very RSS slope being measured."""

    def __init__(self, capacity: int) -> None:
        self._rows = np.zeros((capacity, 6))
        self._n = 0

    def take(self, audio_s: float, t0: float) -> None:
        if self._n == len(self._rows):
            raise RuntimeError("the soak took more samples than it made room for")
        self._rows[self._n] = (audio_s / 3600.0, time.monotonic() - t0, proc_status("VmRSS"),
                               len(os.listdir("/proc/self/fd")), threading.active_count(),
                               proc_status("Threads"))
        self._n += 1

    def samples(self) -> list[Sample]:
        return [Sample(round(float(h), 4), round(float(w), 2), int(rss), int(fds), int(th),
                       int(os_th)) for h, w, rss, fds, th, os_th in self._rows[:self._n]]


class IdCounter:
    """A persistent-session subscriber that counts the distinct clips it receives, in a
    process of its own: its set of ids grows with every clip, and in the soak's process
    it would be counted as the daemon's memory."""

    def __init__(self, host: str, port: int, topic: str, session: str) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--collect", host, str(port),
             topic, session], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "subscribed":
            self.proc.kill()
            raise RuntimeError("the soak's subscriber could not subscribe")

    def wait_for(self, n: int, timeout: float) -> int:
        """The distinct clips received, once there are ``n`` or ``timeout`` s have passed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n} {timeout}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def collect(host: str, port: int, topic: str, session: str) -> int:
    """The subscriber process of ``IdCounter``: prints ``subscribed``, then for each line
    ``N TIMEOUT`` on stdin the number of distinct clip ids received once it reaches N."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    ids: set[str] = set()
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        user = dict(getattr(msg.properties, "UserProperty", []) or [])
        with lock:
            ids.add(user.get("id", ""))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(0.05, 0.5)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 86400
    client.connect(host, port, clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(10.0):
        return 1
    print("subscribed", flush=True)
    for line in sys.stdin:
        n, timeout = line.split()
        deadline = time.monotonic() + float(timeout)
        while len(ids) < int(n) and time.monotonic() < deadline:
            time.sleep(0.05)
        print(len(ids), flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


def one_minute() -> np.ndarray:
    """About a minute of audio with exactly one wake phrase and a request."""
    return synth.concat([
        synth.prose(20.0, seed=3), synth.silence(4.0), synth.pink_noise(6.0, -50.0),
        synth.speak("hey jarvis"), synth.silence(0.3),
        synth.speak("turn on the kitchen lights please"), synth.silence(4.0),
        synth.prose(15.0, seed=4), synth.silence(6.0),
    ])


class AudioClock:
    """The device's clock in the soak: wall and monotonic time advance with the audio read
    (as on a device, where an hour of audio is an hour) plus the real time that passed, so
    that time still moves while no audio is read (muted, draining at the end). With the
    system clock alone a soak at 200x real time would be younger than an hour at its end,
    and whatever the daemon keeps for "the last hour" (the MQTT device's false-wake window)
    would hold the whole run."""

    def __init__(self, source: LoopSource) -> None:
        self.source = source
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def _elapsed(self) -> float:
        return self.source.audio_s + (time.monotonic() - self._mono0)

    def wall(self) -> float:
        return self._wall0 + self._elapsed()

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed()


class LoopSource:
    """The loop, frame after frame, for ``frames`` frames; ``hooks`` run on the audio thread
    at the audio second they are due (every ``every`` seconds)."""

    name = "soak loop"

    def __init__(self, loop: np.ndarray, frames: int) -> None:
        n = len(loop) // FRAME_SAMPLES
        self.frames_of_loop = loop[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES).copy()
        self.total = frames
        self.read_count = 0
        self.hooks: list[tuple[float, Any]] = []
        self._due: list[float] = []

    def every(self, seconds: float, fn: Any) -> None:
        self.hooks.append((seconds, fn))
        self._due.append(seconds)

    @property
    def audio_s(self) -> float:
        return self.read_count * FRAME_S

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        if self.read_count >= self.total:
            return None
        frame = self.frames_of_loop[self.read_count % len(self.frames_of_loop)]
        self.read_count += 1
        now = self.audio_s
        for i, (period, fn) in enumerate(self.hooks):
            if now >= self._due[i]:
                self._due[i] += period
                fn()
        return frame.copy()

    def close(self) -> None:
        pass


def run_soak(hours: float, out: Path | None, *, restart_every_s: float = 1800.0,
             mute_every_s: float = 900.0, sample_every_s: float = 300.0,
             warmup_s: float | None = None, workdir: Path | None = None) -> dict[str, Any]:
    from gpiozero.pins.mock import MockFactory

    from edge.compose.daemon import Seams, build_device
    from edge.config import (
        ActivationsConfig,
        Config,
        HardwareConfig,
        MqttConfig,
        MqttUploadConfig,
        OutputConfig,
        SecurityConfig,
        UploadConfig,
    )
    from edge.service.startup import freeze_start_up_heap, pause_collector
    from tests.fixtures.mqtt import Broker, free_port, write_conf

    work = Path(workdir or tempfile.mkdtemp(prefix="edge-soak-"))
    (work / "broker").mkdir(parents=True, exist_ok=True)
    broker = Broker(work / "broker", free_port())
    write_conf(broker.directory, broker.port, persistence=True)
    broker.start()
    collector = IdCounter(broker.host, broker.port, "edge-recorder/#", "soak-collector")
    cfg = Config(
        state_dir=str(work / "state"),
        output=OutputConfig(keep_local=False),
        upload=UploadConfig(mode="mqtt", retry_min_s=0.2, retry_max_s=2.0, retention_days=0,
                            mqtt=MqttUploadConfig(host=broker.host, port=broker.port,
                                                  tls=False, timeout_s=5.0)),
        activations=ActivationsConfig(checkpoint_s=600.0),
        hardware=HardwareConfig(profile="generic-usb", pin_factory="mock", chime=False),
        # the soak's pins are simulated and nobody listens for chimes: opted out, explicitly
        security=SecurityConfig(allow_simulated_pins=True, allow_silent_recording=True),
        mqtt=MqttConfig(enabled=True, host=broker.host, port=broker.port, tls=False,
                        state_interval_s=60.0),
    )
    frames = int(hours * 3600 / FRAME_S)
    loop = one_minute()
    source = LoopSource(loop, frames)
    factory = MockFactory()
    pause_collector()  # as `edge run` starts: built with the collector paused, then frozen
    device = build_device(cfg, source, Seams(clock=AudioClock(source), pin_factory=factory,
                                             upload_drain_s=30.0,
                                             systemd=lambda _models: None))
    daemon, upload = device.daemon, device.upload
    freeze_start_up_heap()
    factory.pin(MUTE_PIN).drive_low()  # the switch closed to ground (over the pull-up): listen
    t0 = time.monotonic()
    warm = warmup_s if warmup_s is not None else min(1800.0, hours * 3600 * 0.2)
    taken = SampleLog(int(hours * 3600 / sample_every_s) + 4)
    counts = {"mute_toggles": 0, "broker_restarts": 0}
    restarting = threading.Lock()

    def take() -> None:
        if source.audio_s >= warm:
            taken.take(source.audio_s, t0)

    def toggle_mute() -> None:
        # The switch flips to mute; a person flips it back a moment later (wall time:
        # while muted no frame is read, so audio time stands still).
        factory.pin(MUTE_PIN).drive_high()
        counts["mute_toggles"] += 1
        threading.Timer(0.3, factory.pin(MUTE_PIN).drive_low).start()

    def restart_broker() -> None:
        def go() -> None:
            with restarting:
                broker.stop()
                time.sleep(1.0)
                broker.start()
            counts["broker_restarts"] += 1

        threading.Thread(target=go, name="soak-broker-restart").start()

    def clear_pin_histories() -> None:
        # gpiozero's MockPin keeps every state it was ever in (test instrumentation, not
        # memory a device has): without this the soak measures its own mock's history.
        for pin in factory.pins.values():
            pin.clear_states()

    source.every(sample_every_s, take)
    source.every(600.0, clear_pin_histories)
    source.every(mute_every_s, toggle_mute)
    source.every(restart_every_s, restart_broker)
    daemon_thread = threading.Thread(target=daemon.runner.run, name="soak-daemon")
    daemon_thread.start()
    daemon_thread.join()
    with restarting:  # a restart in progress finishes first
        pass
    audio_s = source.audio_s
    # settle: every clip handed over and uploaded, then the last sample, then close
    daemon.dispatcher.flush()
    deadline = time.monotonic() + 120
    while upload.outbox is not None and upload.outbox.count() and time.monotonic() < deadline:
        time.sleep(0.1)
    taken.take(audio_s, t0)
    samples = taken.samples()
    wall = time.monotonic() - t0
    stats = daemon.recorder.stats
    queued = upload.outbox.count() if upload.outbox is not None else -1
    delivered = upload.uploader.delivered if upload.uploader is not None else 0
    daemon.close()
    received = collector.wait_for(delivered, 30)
    collector.close()
    broker.stop()
    factory.reset()

    base, end = samples[0], samples[-1]
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    result = {
        "hours_of_audio": round(audio_s / 3600.0, 3),
        "wall_s": round(wall, 1),
        "x_realtime": round(audio_s / wall, 1),
        "warmup_hours": round(warm / 3600.0, 3),
        "detections": stats.detections,
        "clips": stats.clips,
        "discarded": stats.discarded,
        "by_reason": stats.by_reason,
        "uploaded": delivered,
        "received_by_broker_subscriber": received,
        "left_in_outbox": queued,
        "mute_toggles": counts["mute_toggles"],
        "broker_restarts": counts["broker_restarts"],
        "rss_growth_kb": end.rss_kb - base.rss_kb,
        **rss_slope(last_half(samples)),
        "fd_growth": max(s.fds for s in last) - max(s.fds for s in first),
        "thread_growth": max(s.threads for s in last) - max(s.threads for s in first),
        "os_thread_growth": max(s.os_threads for s in last) - max(s.os_threads for s in first),
        "samples": [asdict(s) for s in samples],
        "pass_mark": "RSS growth < 5 MB; no fd growth; no thread growth (after warm-up)",
        "malloc_env": {k: os.environ.get(k) for k in unit_malloc_env()},
        "clock": "audio time (AudioClock)",
    }
    result["pass"] = bool(result["rss_growth_kb"] < RSS_LIMIT_KB and result["fd_growth"] <= 0
                          and result["thread_growth"] <= 0 and result["os_thread_growth"] <= 0
                          and queued == 0 and received >= stats.clips > 0)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


UNIT = ROOT / "systemd" / "edge-recorder.service"


def unit_malloc_env(unit: Path = UNIT) -> dict[str, str]:
    """The glibc malloc settings (``Environment=MALLOC_*``) the service runs with."""
    out = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment=MALLOC_"):
            key, _, value = line.removeprefix("Environment=").partition("=")
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--collect"]:  # IdCounter's subscriber process
        host, port, topic, session = argv[1:5]
        return collect(host, int(port), topic, session)
    malloc = unit_malloc_env()
    if any(os.environ.get(k) != v for k, v in malloc.items()):
        # glibc reads these once, at start: the soak restarts itself with the service's
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv],
                  {**os.environ, **malloc})
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=24.0, help="hours of audio (default 24)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    p.add_argument("--restart-every", type=float, default=1800.0, metavar="S",
                   help="restart the broker every S seconds of audio")
    p.add_argument("--mute-every", type=float, default=900.0, metavar="S",
                   help="toggle the mute switch every S seconds of audio")
    p.add_argument("--sample-every", type=float, default=300.0, metavar="S")
    p.add_argument("--warmup", type=float, default=None, metavar="S",
                   help="audio seconds before the baseline sample (default: 20%%, at most 30 min)")
    args = p.parse_args(argv)
    if args.hours <= 0:
        p.error("--hours must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: "
                                                      "%(message)s")
    r = run_soak(args.hours, args.out, restart_every_s=args.restart_every,
                 mute_every_s=args.mute_every, sample_every_s=args.sample_every,
                 warmup_s=args.warmup)
    print(f"{r['hours_of_audio']} h of audio in {r['wall_s']} s ({r['x_realtime']}x): "
          f"{r['clips']} clips, {r['uploaded']} uploaded, {r['broker_restarts']} broker "
          f"restarts, {r['mute_toggles']} mutes; RSS {r['rss_growth_kb']:+d} kB, fds "
          f"{r['fd_growth']:+d}, threads {r['thread_growth']:+d} "
          f"(native {r['os_thread_growth']:+d}): {'PASS' if r['pass'] else 'FAIL'}")
    print(f"RSS over the last half: {r['rss_slope_last_half_kb_per_h']:+.1f} kB per audio hour "
          f"(standard error {r['rss_slope_stderr_kb_per_h']:.1f}, residual noise "
          f"{r['rss_noise_last_half_kb']:.1f} kB): "
          f"{'flat' if r['rss_flat_last_half'] else 'not flat'}")
    print(f"figures: {args.out}")
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
