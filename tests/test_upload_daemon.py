"""The whole way out, through the real daemon and models: detections in, clips delivered.

Covers delivery (N detections -> N clips, each id once), a broker outage during
detections, ``upload = "off"`` over a 10-minute replay (no connection at all), and
that nothing that leaves names the machine.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.sources import ArraySource
from edge.pipeline.daemon import Daemon
from edge.privacy.ledger import read_ledger
from tests.device import build
from tests.fakes import HeldSource
from tests.fixtures.audio import phrase
from tests.upload_helpers import mqtt_opts, upload_cfg
from tests.waiting import wait_for


def detections(n: int, request: str = "what is the weather like today") -> np.ndarray:
    """``n`` wake phrases, each followed by a request and a pause: n clips."""
    parts: list[np.ndarray] = []
    for _ in range(n):
        parts += [synth.silence(1.5), phrase("hey jarvis"), synth.silence(0.3), phrase(request),
                  synth.silence(2.5)]
    return synth.concat(parts)


def run_daemon(cfg: Any, audio: np.ndarray, **seams: Any) -> Daemon:
    daemon = build(cfg, ArraySource(audio), **seams).daemon
    daemon.run(install_signals=False)
    return daemon


# -- identifiers ---------------------------------------------------------------------------

def machine_identifiers() -> list[str]:
    """Strings that would identify this machine or its owner, in the forms they appear."""
    ids = {socket.gethostname(), socket.getfqdn(), getpass.getuser()}
    for addr in Path("/sys/class/net").glob("*/address"):
        mac = addr.read_text().strip().lower()
        if mac and mac != "00:00:00:00:00:00":
            ids |= {mac, mac.upper(), mac.replace(":", ""), mac.replace(":", "-"),
                    mac.replace(":", "").upper()}
    for p in (Path("/etc/machine-id"), Path("/proc/device-tree/serial-number")):
        with contextlib.suppress(OSError):
            ids.add(p.read_text().strip("\x00\n "))
    return sorted(i for i in ids if i and i != "localhost")


def assert_no_identifiers(texts: list[str]) -> None:
    ids = machine_identifiers()
    for text in texts:
        tokens = set(re.split(r"[^0-9A-Za-z:_.-]+", text)) | set(re.split(r"[^0-9A-Za-z]+", text))
        for ident in ids:
            # short names ("vm", "pi") are checked as whole tokens, long ones as substrings
            hit = ident in tokens if len(ident) < 6 else ident in text
            assert not hit, f"{ident!r} appears in {text[:200]!r}"


def assert_plain_wav_of(payload: bytes, seconds_max: float) -> None:
    """The payload is a bare 16 kHz mono WAV (RIFF, fmt, data): no room for anything else."""
    assert payload[:4] == b"RIFF" and payload[8:16] == b"WAVEfmt "
    assert payload[36:40] == b"data"
    n = int.from_bytes(payload[40:44], "little")
    assert len(payload) == 44 + n and n <= seconds_max * 32000


# -- delivery ------------------------------------------------------------------------------

def test_n_detections_deliver_n_clips_over_mqtt_each_id_once(mqtt_broker, mqtt_collector,
                                                              tmp_path):
    n = 4
    col = mqtt_collector(mqtt_broker, "edge-recorder/#")
    cfg = upload_cfg(tmp_path, "mqtt", mqtt=mqtt_opts(mqtt_broker))
    daemon = run_daemon(cfg, detections(n), upload_drain_s=20)
    assert daemon.recorder.stats.clips == n
    msgs = col.wait_for(n)
    ids = [m.user_properties["id"] for m in msgs]
    assert len(set(ids)) == n                      # after de-duplication by id: n clips
    delivered = [e["clip"] for e in read_ledger(tmp_path / "ledger.jsonl").entries
                 if e["result"] == "delivered"]
    assert sorted(set(ids)) == sorted(delivered)
    for m in msgs:
        assert_plain_wav_of(m.payload, cfg.record.max_record_s + cfg.audio.pre_roll_s + 1)
        assert m.user_properties["sha256"] == hashlib.sha256(m.payload).hexdigest()
    files = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")]
    assert_no_identifiers([m.topic for m in msgs]
                          + [json.dumps(m.user_properties) for m in msgs] + files
                          + [(tmp_path / "ledger.jsonl").read_text()])
    assert not list((tmp_path / "outbox" / "spool").iterdir())


def test_n_detections_deliver_n_clips_over_https_without_identifiers(https_receiver, tmp_path):
    n = 3
    rx = https_receiver()
    cfg = upload_cfg(tmp_path, "https", https={"url": rx.url, "ca": str(rx.ca_path)})
    daemon = run_daemon(cfg, detections(n), upload_drain_s=20)
    assert daemon.recorder.stats.clips == n
    assert len(rx.ok_bodies()) == n
    for r in rx.requests:
        assert_plain_wav_of(r.body, 12)
    files = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")]
    assert_no_identifiers([json.dumps(r.headers) for r in rx.requests] + [r.path for r in
                                                                          rx.requests] + files)


def test_mqtt_311_envelope_carries_no_identifiers(mqtt_broker, mqtt_collector, tmp_path):
    col = mqtt_collector(mqtt_broker, "edge-recorder/#", protocol=4)
    cfg = upload_cfg(tmp_path, "mqtt", mqtt=mqtt_opts(mqtt_broker, protocol="3.1.1"))
    run_daemon(cfg, detections(1), upload_drain_s=20)
    [m] = col.wait_for(1)
    head, _, body = m.payload.partition(b"\n")
    assert_plain_wav_of(body, 12)
    assert_no_identifiers([m.topic, head.decode()])


# -- broker outage -------------------------------------------------------------------------

def test_broker_outage_during_detections_loses_nothing(mosquitto_broker, mqtt_collector,
                                                       tmp_path):
    m = 3
    broker = mosquitto_broker(persistence=True)
    col = mqtt_collector(broker, "edge-recorder/#", session="outage-collector")
    broker.stop()
    cfg = upload_cfg(tmp_path, "mqtt", mqtt=mqtt_opts(broker))
    source = HeldSource(detections(m))
    device = build(cfg, source, upload_drain_s=20)
    plugin, daemon = device.upload, device.daemon
    t = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert wait_for(lambda: daemon.recorder.stats.clips == m)
        assert wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == m)
        assert plugin.uploader is not None and plugin.uploader.failures >= 1
        assert col.messages == []
        broker.start()
        msgs = col.wait_for(m, timeout=30)
        assert wait_for(lambda: plugin.outbox.count() == 0)
    finally:
        source.release.set()
        t.join(60)
    assert len({x.user_properties["id"] for x in msgs}) == m


# -- upload off ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ten_minutes() -> np.ndarray:
    """Ten minutes of prose with a wake phrase and request every ~50 s."""
    chunks: list[np.ndarray] = []
    total = 0
    seed = 0
    while total < 600 * 16000:
        part = synth.concat([synth.prose(40, seed=seed), detections(1)])
        chunks.append(part)
        total += len(part)
        seed += 1
    return synth.concat(chunks)[: 600 * 16000]


class Connections:
    """Records every socket connect/send to an internet address made while ``active`` by a
    thread that did not exist before (the daemon's) or by this one (an audit hook)."""

    def __init__(self) -> None:
        self.active = False
        self.ignore: set[int] = set()
        self.seen: list[Any] = []
        sys.addaudithook(self._hook)

    def start(self) -> None:
        self.ignore = {t.ident for t in threading.enumerate() if t.ident is not None}
        self.ignore.discard(threading.get_ident())
        self.active = True

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or threading.get_ident() in self.ignore:
            return
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            sock, addr = args[0], args[1] if len(args) > 1 else None
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.seen.append((event, addr))


_connections: Connections | None = None


def test_upload_off_makes_zero_connections_over_a_ten_minute_replay(ten_minutes, tmp_path,
                                                                    caplog):
    global _connections
    if _connections is None:
        _connections = Connections()
    listeners = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        listeners.append(s)
    mqtt_port, https_port = (s.getsockname()[1] for s in listeners)
    cfg = upload_cfg(tmp_path, "off", mqtt={"host": "127.0.0.1", "port": mqtt_port},
                     https={"url": f"http://127.0.0.1:{https_port}/clips"})
    caplog.set_level("INFO")
    _connections.start()
    try:
        daemon = run_daemon(cfg, ten_minutes)
    finally:
        _connections.active = False
    clips = daemon.recorder.stats.clips
    assert clips >= 8                         # the detections happened
    for s in listeners:
        with pytest.raises(BlockingIOError):
            s.accept()                        # nobody ever connected
        s.close()
    assert _connections.seen == []
    discarded = [r for r in caplog.records if "discarded (upload is off" in r.getMessage()]
    assert len(discarded) == clips            # each clip's metadata was logged, then dropped
    audio = [p for p in tmp_path.rglob("*") if p.suffix in (".wav", ".clip", ".sealed")]
    assert audio == []
    assert not (tmp_path / "outbox").exists() and not (tmp_path / "ledger.jsonl").exists()


def test_upload_off_with_keep_local_keeps_clips_only_on_the_device(tmp_path):
    cfg = upload_cfg(tmp_path, "off", keep_local=True)
    daemon = run_daemon(cfg, detections(2))
    assert daemon.recorder.stats.clips == 2
    assert len(list((tmp_path / "clips").glob("*.wav"))) == 2
    assert not (tmp_path / "outbox").exists()


def test_delivered_clips_are_marked_uploaded_in_the_activation_log(https_receiver, tmp_path):
    from edge.activations.store import ActivationLog, db_path

    rx = https_receiver()
    cfg = upload_cfg(tmp_path, "https", https={"url": rx.url, "ca": str(rx.ca_path)})
    daemon = build(cfg, ArraySource(detections(2)), upload_drain_s=20).daemon
    daemon.run(install_signals=False)
    assert len(rx.ok_bodies()) == 2
    with ActivationLog.open(db_path(cfg), create=False) as log:
        rows = log.rows()
    assert sorted(r["outcome"] for r in rows) == ["uploaded", "uploaded"]
    assert {r["clip_id"] for r in rows} == set(rx.ok_bodies())


def test_edge_run_uploads_what_it_hears_and_audit_shows_it(https_receiver, tmp_path, wav,
                                                           capsys):
    from edge.cli import main as edge

    rx = https_receiver()
    config = tmp_path / "edge.toml"
    config.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[output]
keep_local = false
[upload]
mode = "https"
[upload.https]
url = "{rx.url}"
ca = "{rx.ca_path}"
[hardware]
profile = "generic-usb"       # an uploading device must have a recording light
pin_factory = "mock"
mute_pin = "none"
[security]
allow_simulated_pins = true   # the light's pin is simulated: the test says it knows
""")
    assert edge(["run", "--config", str(config), "--input", str(wav(detections(2)))]) == 0
    assert len(rx.ok_bodies()) == 2
    capsys.readouterr()
    assert edge(["audit", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["delivered"]["clips"] == 2 and doc["queued"] == 0
    assert set(doc["summary"]["delivered"]["destinations"]) == {f"https://127.0.0.1:{rx.port}"}
