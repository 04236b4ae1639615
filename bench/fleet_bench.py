"""Fleet scale: 1,000 simulated devices on one Mosquitto, and the dashboard keeping up.

    .venv/bin/python bench/fleet_bench.py [--devices 1000] [--quick]

Three processes, as in the field: Mosquitto, ``edge dashboard`` and
``edge simulate-fleet`` (one MQTT connection per device, the real message formats).
This process watches the dashboard as a page would: an SSE client on ``/events`` and
a real headless Chromium on ``/`` (the page records, per device update it applies,
the time from the state message's ``wall_time`` to the update on the page).

Phases:

* ``realistic``: state every 60 s per device, about one activation per device per
  hour, and every 60 s a burst in which 20 % of the fleet wakes at once (a wake
  word on television). Every published message must reach the history, none may be
  dropped, and the p95 latency must stay under 1 s (SSE) and 2 s (page).
* ``stress``: state every 1, 0.5 and 0.25 s per device (1,000 to 4,000 messages/s
  asked of the simulator), to find the rate the dashboard sustains: the highest
  offered rate it stores as it comes (nothing dropped, under a second behind when
  the simulator stops); it must be at least 10 times the realistic rate.

Results: a table on stdout and bench/results/fleet.json; exit 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.browser import chromium  # noqa: E402
from tests.fixtures.mqtt import Broker, free_port, port_open, write_conf  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fleet.json"
EDGE = [sys.executable, "-m", "edge"]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))], 4)


class SseWatcher(threading.Thread):
    """An SSE client on /events: counts updates and the latency of each device update."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.updates = 0
        self.device_updates = 0
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/events")
        resp = conn.getresponse()
        while not self._stop.is_set():
            line = resp.fp.readline()
            if not line:
                return
            if not line.startswith(b"data: "):
                continue
            now = time.time()
            u = json.loads(line[6:])
            with self._lock:
                self.updates += 1
                for d in u.get("devices", []):
                    s = d.get("state")
                    if s and s.get("wall_time") and s["wall_time"] != self._seen.get(d["id"]):
                        self._seen[d["id"]] = s["wall_time"]  # a new state message
                        self.device_updates += 1
                        self.latencies.append(now - s["wall_time"])

    def take(self) -> tuple[list[float], int, int]:
        with self._lock:
            out = (self.latencies, self.updates, self.device_updates)
            self.latencies, self.updates, self.device_updates = [], 0, 0
        return out

    def stop(self) -> None:
        self._stop.set()


def counters(port: int) -> dict[str, Any]:
    """The dashboard's ingest counters (``/api/health``: cheap even under load)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=30) as r:
        return dict(json.loads(r.read())["ingest"])


def simulate(broker_port: int, devices: int, seconds: float, state_interval: float,
             per_hour: float, burst_every: float, seed: int) -> tuple[subprocess.Popen[str], Any]:
    cmd = [*EDGE, "simulate-fleet", "--broker", f"mqtt://127.0.0.1:{broker_port}",
           "--devices", str(devices), "--duration", str(seconds), "--state-interval",
           str(state_interval), "--activations-per-hour", str(per_hour), "--burst-every",
           str(burst_every), "--burst-fraction", "0.2", "--seed", str(seed)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, cmd


def wait_online(proc: subprocess.Popen[str]) -> tuple[float, int]:
    """Block until the simulator says its devices are online: when, and how many messages
    it had published by then (status and first state of each device)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"online \((\d+) messages so far\)", line)
    if not m:
        raise SystemExit(f"simulator failed: {line}{proc.stderr.read() if proc.stderr else ''}")
    return time.monotonic(), int(m.group(1))


def published(proc: subprocess.Popen[str], seconds: float) -> int:
    out, err = proc.communicate(timeout=seconds + 120)
    m = re.search(r"published (\d+) messages", out)
    if not m:
        raise SystemExit(f"simulator output not understood:\n{out}\n{err}")
    return int(m.group(1))


def phase(name: str, broker: Broker, dash_port: int, sse: SseWatcher, page: Any,
          devices: int, seconds: float, state_interval: float, per_hour: float,
          burst_every: float, seed: int) -> dict[str, Any]:
    before = counters(dash_port)["received"]
    proc, _cmd = simulate(broker.port, devices, seconds, state_interval, per_hour, burst_every,
                          seed)
    try:
        t0, at_online = wait_online(proc)
        sse.take()
        page.execute_script("window.edgeStats.latencies = []; window.edgeStats.applied = 0;")
        start = counters(dash_port)
        ts = time.monotonic()
        n_pub = published(proc, seconds)  # waits for the simulator to finish (and go offline)
    except BaseException:
        proc.kill()
        raise
    t1 = time.monotonic()
    mid = counters(dash_port)
    te = time.monotonic()
    sse_lat, updates, device_updates = sse.take()
    page_stats = page.execute_script("return window.edgeStats")
    page_lat = [float(x) for x in page_stats["latencies"]]
    # drain: whatever the dashboard still has queued
    deadline = time.monotonic() + 120
    end = mid
    while time.monotonic() < deadline:
        time.sleep(1.0)
        end = counters(dash_port)
        if end["received"] - before >= n_pub and end["queued"] == 0:
            break
    drain_s = time.monotonic() - te
    window = t1 - t0
    got_in_window = mid["stored"] + mid["skipped"] - start["stored"] - start["skipped"]
    r = {
        "phase": name, "devices": devices, "seconds": round(window, 1),
        "state_interval_s": state_interval, "activations_per_device_hour": per_hour,
        "burst_every_s": burst_every,
        "published": n_pub,
        "received_total": end["received"] - before,
        "dropped": end["dropped"], "skipped": end["skipped"],
        "offered_msgs_per_s": round((n_pub - at_online - devices) / window, 1),
        "ingested_msgs_per_s": round(got_in_window / (te - ts), 1),
        "lag_at_stop": max(0, n_pub - (mid["stored"] + mid["skipped"] - before)),
        "drain_s": round(drain_s, 1),
        "drained": end["received"] - before >= n_pub and end["queued"] == 0,
        "sse_updates": updates, "sse_device_updates": device_updates,
        "sse_latency_s": {"p50": pct(sse_lat, 0.5), "p95": pct(sse_lat, 0.95),
                          "p99": pct(sse_lat, 0.99), "max": pct(sse_lat, 1.0)},
        "page_device_updates": int(page_stats["applied"]),
        "page_latency_s": {"p50": pct(page_lat, 0.5), "p95": pct(page_lat, 0.95),
                           "p99": pct(page_lat, 0.99), "max": pct(page_lat, 1.0)},
    }
    print(f"{name:>11}: {n_pub} published; {window:.0f} s at {r['offered_msgs_per_s']} msg/s; "
          f"ingested {r['ingested_msgs_per_s']} msg/s, lag at stop {r['lag_at_stop']}, "
          f"dropped {r['dropped']}, drained {r['drained']}; SSE p50/p95 "
          f"{r['sse_latency_s']['p50']}/{r['sse_latency_s']['p95']} s; page p50/p95 "
          f"{r['page_latency_s']['p50']}/{r['page_latency_s']['p95']} s", flush=True)
    return r


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="shorter phases (a smoke run)")
    args = ap.parse_args(argv)
    realistic_s, stress_s = (40.0, 8.0) if args.quick else (150.0, 20.0)
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    work.chmod(0o755)
    broker = Broker(work, free_port())
    write_conf(work, broker.port, extra="max_queued_messages 100000")
    broker.start()
    dash_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    dash = subprocess.Popen([*EDGE, "dashboard", "--broker", f"mqtt://127.0.0.1:{broker.port}",
                             "--port", str(dash_port), "--db", str(work / "fleet.sqlite3")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(work / "dashboard.log", "w"))  # noqa: SIM115
    page = None
    sse = SseWatcher(dash_port)
    results: list[dict[str, Any]] = []
    try:
        try:
            wait_for(lambda: port_open(dash_port), 30.0, "the dashboard to listen", poll_s=0.02)
        except AssertionError:
            raise SystemExit("the dashboard did not start; see "
                             + str(work / "dashboard.log")) from None
        sse.start()
        page = chromium(work / "chromium-profile")
        page.get(f"http://127.0.0.1:{dash_port}/")
        results.append(phase("realistic", broker, dash_port, sse, page, args.devices,
                             realistic_s, 60.0, 1.0, 60.0 if not args.quick else 20.0, 1))
        for i, interval in enumerate((1.0, 0.5, 0.25)):
            results.append(phase(f"stress-{round(args.devices / interval)}", broker, dash_port,
                                 sse, page, args.devices, stress_s, interval, 0.0, 0.0, 2 + i))
    finally:
        sse.stop()
        if page is not None:
            page.quit()
        dash.terminate()
        try:
            dash.wait(20)
        except subprocess.TimeoutExpired:
            dash.kill()
        broker.stop()
    real = results[0]
    # the highest offered rate the dashboard stored as it came (no drops, under 1 s behind)
    sustained = max((r["offered_msgs_per_s"] for r in results
                     if r["dropped"] == 0 and r["drained"]
                     and r["lag_at_stop"] <= r["offered_msgs_per_s"]), default=0.0)
    peak = max(r["ingested_msgs_per_s"] for r in results)
    checks = {
        "realistic: every message stored, none dropped": real["drained"] and real["dropped"] == 0,
        "realistic: SSE p95 latency < 1 s": (real["sse_latency_s"]["p95"] or 99) < 1.0,
        "realistic: page p95 latency < 2 s": (real["page_latency_s"]["p95"] or 99) < 2.0,
        "stress: keeps up with 10x the realistic rate": sustained >= 10 * real[
            "offered_msgs_per_s"],
    }
    out = {"bench": "fleet", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpus": os.cpu_count()}, "phases": results,
           "sustained_msgs_per_s": sustained, "peak_ingest_msgs_per_s": peak,
           "checks": checks}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"sustained without loss or lag: {sustained} msg/s; peak ingest {peak} msg/s")
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
