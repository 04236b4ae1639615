"""Killed while uploading: SIGKILL at random moments, restart, and nothing is lost or corrupt."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

from edge.sinks.local import wav_bytes
from edge.upload.queue import CorruptEntry, Outbox
from tests.upload_helpers import make_clip

REPO = Path(__file__).resolve().parent.parent
TRIALS = 24


class Worker:
    def __init__(self, state: Path, port: int, new: int, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.upload_worker", str(state), str(port), str(new),
             str(seed)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.queued: dict[str, str] = {}
        self.in_flight: set[str] = set()
        self.sending = threading.Event()
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # Only whole lines count: the kill may cut the last one short, and a clip the
            # worker queued without saying so is allowed for below.
            word, *rest = (line.split() if line.endswith("\n") else []) or [""]
            if word == "queued" and len(rest) == 2:
                self.queued[rest[0]] = rest[1]
                self.started.set()
            elif word == "sending" and rest:
                self.in_flight.add(rest[0])
                self.sending.set()
                self.started.set()
            elif word == "sent" and rest:
                self.in_flight.discard(rest[0])

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)

    def finish(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


def test_sigkill_at_random_moments_never_loses_or_corrupts_a_clip(mqtt_broker, mqtt_collector,
                                                                  tmp_path):
    rng = random.Random(20261122)
    col = mqtt_collector(mqtt_broker, "edge-recorder/#")
    expected: dict[str, str] = {}
    killed_mid_send = 0
    killed_in_flight = 0
    for trial in range(TRIALS):
        w = Worker(tmp_path, mqtt_broker.port, new=3, seed=1000 * trial)
        assert w.started.wait(30), "worker never started"
        if trial % 2:
            # aim at an upload in flight
            w.sending.wait(5)
            threading.Event().wait(rng.uniform(0, 0.01))
        else:
            threading.Event().wait(rng.uniform(0, 0.15))
        w.kill()
        killed_mid_send += w.sending.is_set()
        killed_in_flight += bool(w.in_flight)
        expected.update(w.queued)
        received = {m.user_properties["id"] for m in col.messages}
        ob = Outbox(tmp_path / "outbox")
        try:
            queued = {e.id: e for e in ob.pending()}
            for e in queued.values():
                try:
                    body = ob.read(e)
                except CorruptEntry:
                    raise AssertionError(f"trial {trial}: queued clip {e.id} is corrupt") from None
                assert hashlib.sha256(body).hexdigest() == e.sha256
            assert ob.quarantined == 0, f"trial {trial}: an entry had to be quarantined"
        finally:
            ob.close()
        lost = [cid for cid in expected if cid not in received and cid not in queued]
        assert not lost, f"trial {trial}: clips neither delivered nor queued: {lost}"
    assert killed_mid_send > 0
    final = Worker(tmp_path, mqtt_broker.port, new=0, seed=0)
    assert final.finish() == 0
    msgs = col.wait_for(len(expected), timeout=30)
    by_id: dict[str, set[str]] = {}
    for m in msgs:
        by_id.setdefault(m.user_properties["id"], set()).add(
            hashlib.sha256(m.payload).hexdigest())
    assert set(expected) <= set(by_id)             # every clip confirmed queued arrived
    # a clip may also have been queued by a worker killed before it could say so
    made = {}
    for trial in range(TRIALS):
        for i in range(3):
            clip = make_clip(10.0, seed=1000 * trial + i)
            made[clip.id] = hashlib.sha256(wav_bytes(clip)).hexdigest()
    for cid, shas in by_id.items():
        assert shas == {made[cid]}, f"clip {cid} arrived corrupt"
    assert not list((tmp_path / "outbox" / "quarantine").iterdir())
    print(f"{TRIALS} kills, {killed_mid_send} after uploads began, {killed_in_flight} with one "
          f"in flight (sent, no PUBACK yet); {len(expected)} clips, "
          f"{len(msgs)} messages before de-duplication")
