"""The outbox: durable, bounded, crash-safe; corrupt entries are quarantined, not fatal."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import UploadError
from edge.privacy.ledger import Ledger, read_ledger
from edge.upload.queue import CorruptEntry, Entry, Outbox
from edge.upload.uploader import Uploader


class RecordingSender:
    """A sender that fails while ``failing`` holds an error message, and records deliveries."""

    destination = "test://receiver"

    def __init__(self) -> None:
        self.failing = ""
        self.fail_ids: set[str] = set()
        self.sent: list[tuple[str, bytes]] = []

    def send(self, entry: Entry, payload: bytes) -> None:
        if self.failing:
            raise UploadError(self.failing)
        if entry.id in self.fail_ids:
            raise UploadError(f"receiver refuses {entry.id}")
        self.sent.append((entry.id, payload))

    def close(self) -> None:
        pass


def new_outbox(tmp_path: Path, clock: FakeClock | None = None, **kw) -> Outbox:
    clock = clock or FakeClock()
    return Outbox(tmp_path / "outbox", ledger=Ledger(tmp_path / "ledger.jsonl", clock),
                  clock=clock, **kw)


def drain(up: Uploader, clock: FakeClock, steps: int = 100) -> None:
    for _ in range(steps):
        wait = up.step()
        if up.outbox.count() == 0:
            return
        clock.advance(wait)


def test_put_is_durable_and_survives_reopen(tmp_path):
    ob = new_outbox(tmp_path)
    ob.put("a1", b"RIFFpayload", "audio/wav", {"id": "a1", "score": 0.9})
    ob.close()
    again = new_outbox(tmp_path)
    [e] = again.pending()
    assert (e.id, e.meta, e.payload_size) == ("a1", {"id": "a1", "score": 0.9}, 11)
    assert again.read(e) == b"RIFFpayload"
    db = tmp_path / "outbox" / "outbox.sqlite3"
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.stat().st_mode & 0o077 == 0


def test_full_outbox_drops_the_oldest_with_a_log_a_counter_and_a_ledger_entry(tmp_path, caplog):
    clock = FakeClock()
    ob = new_outbox(tmp_path, clock, max_clips=3)
    for i in range(5):
        ob.put(f"c{i}", bytes(100), "audio/wav", {"id": f"c{i}"})
        clock.advance(1)
    assert [e.id for e in ob.pending()] == ["c2", "c3", "c4"]
    assert ob.dropped == 2
    assert sum("dropped the oldest clip" in r.message for r in caplog.records) == 2
    dropped = [e for e in read_ledger(tmp_path / "ledger.jsonl").entries
               if e["result"] == "dropped"]
    assert [e["clip"] for e in dropped] == ["c0", "c1"]
    assert not (tmp_path / "outbox" / "spool" / "c0.clip").exists()


def test_byte_bound_drops_oldest(tmp_path):
    clock = FakeClock()
    ob = new_outbox(tmp_path, clock, max_bytes=2500)
    for i in range(4):
        ob.put(f"c{i}", bytes(1000), "audio/wav", {})
        clock.advance(1)
    assert [e.id for e in ob.pending()] == ["c2", "c3"]


def test_delivered_only_after_ack_and_every_attempt_is_in_the_ledger(tmp_path):
    clock = FakeClock()
    ob = new_outbox(tmp_path, clock)
    sender = RecordingSender()
    up = Uploader(ob, sender, ob.ledger, retry_min_s=1, retry_max_s=8, clock=clock,
                  rng=random.Random(1))
    payload = b"RIFF" + bytes(50)
    ob.put("x", payload, "audio/wav", {"id": "x"})
    sender.failing = "broker down"
    up.step()
    assert ob.count() == 1 and sender.sent == []
    sender.failing = ""
    drain(up, clock)
    assert sender.sent == [("x", payload)]
    assert ob.count() == 0
    results = [(e["clip"], e["result"]) for e in read_ledger(tmp_path / "ledger.jsonl").entries]
    assert results == [("x", "sending"), ("x", "failed"), ("x", "sending"), ("x", "delivered")]
    last = read_ledger(tmp_path / "ledger.jsonl").entries[-1]
    assert last["sha256"] == hashlib.sha256(payload).hexdigest()
    assert last["bytes"] == len(payload) and last["destination"] == "test://receiver"


def test_backoff_grows_exponentially_with_jitter_and_the_error_is_reported_once(tmp_path, caplog):
    clock = FakeClock()
    ob = new_outbox(tmp_path, clock)
    sender = RecordingSender()
    sender.failing = "cannot reach broker; check upload.mqtt.host"
    up = Uploader(ob, sender, ob.ledger, retry_min_s=1, retry_max_s=16, clock=clock,
                  rng=random.Random(7))
    ob.put("x", b"data", "audio/wav", {})
    for _ in range(40):
        if len(up.delays) == 8:
            break
        clock.advance(up.step())
    assert len(up.delays) == 8
    for n, d in enumerate(up.delays, start=1):
        base = min(16, 2 ** (n - 1))
        assert base / 2 <= d <= base
    assert len(set(up.delays)) == 8          # jittered, not a fixed ladder
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "upload to" in r.message]
    assert len(errors) == 1 and "check upload.mqtt.host" in errors[0].message
    assert ob.count() == 1                   # nothing lost


def test_one_refused_clip_does_not_hold_up_the_others(tmp_path):
    clock = FakeClock()
    ob = new_outbox(tmp_path, clock)
    sender = RecordingSender()
    sender.fail_ids = {"a"}
    up = Uploader(ob, sender, ob.ledger, retry_min_s=1, retry_max_s=60, clock=clock,
                  rng=random.Random(0))
    for cid in "abc":
        ob.put(cid, cid.encode(), "audio/wav", {})
        clock.advance(0.001)
    for _ in range(20):
        clock.advance(up.step())
    assert [s[0] for s in sender.sent] == ["b", "c"]
    assert [e.id for e in ob.pending()] == ["a"]


def test_corrupt_spool_entry_is_quarantined_and_the_queue_goes_on(tmp_path, caplog):
    clock = FakeClock()
    ob = new_outbox(tmp_path, clock)
    ob.put("bad", b"A" * 100, "audio/wav", {})
    clock.advance(1)
    ob.put("good", b"B" * 100, "audio/wav", {})
    spool = tmp_path / "outbox" / "spool" / "bad.clip"
    data = bytearray(spool.read_bytes())
    data[-10] ^= 0xFF
    spool.write_bytes(bytes(data))
    sender = RecordingSender()
    up = Uploader(ob, sender, ob.ledger, clock=clock)
    drain(up, clock)
    assert [s[0] for s in sender.sent] == ["good"]
    assert (tmp_path / "outbox" / "quarantine" / "bad.clip").exists()
    assert ob.quarantined == 1
    entries = read_ledger(tmp_path / "ledger.jsonl").entries
    assert [(e["clip"], e["result"]) for e in entries][0] == ("bad", "quarantined")
    assert "sha256" in entries[0]["error"]


def test_read_of_a_garbled_file_raises_corrupt_entry(tmp_path):
    ob = new_outbox(tmp_path)
    e = ob.put("g", b"x" * 10, "audio/wav", {})
    (tmp_path / "outbox" / "spool" / "g.clip").write_bytes(b"\xff\xfe garbage without newline")
    with pytest.raises(CorruptEntry):
        ob.read(e)
    assert ob.count() == 0


def test_orphan_spool_file_is_adopted_and_torn_temp_files_removed(tmp_path):
    ob = new_outbox(tmp_path)
    ob.put("keep", b"payload", "audio/wav", {"id": "keep"})
    # a crash after the spool file was renamed into place but before its row was committed
    ob._db.execute("DELETE FROM entries")
    ob.close()
    torn = tmp_path / "outbox" / "spool" / ".next.clip.tmp-123"
    torn.write_bytes(b"half a cl")
    again = new_outbox(tmp_path)
    assert [e.id for e in again.pending()] == ["keep"]
    assert again.read(again.pending()[0]) == b"payload"
    assert not torn.exists()


def test_interrupted_removal_is_finished_not_resurrected(tmp_path):
    ob = new_outbox(tmp_path)
    ob.put("done", b"payload", "audio/wav", {})
    # a crash after the row was marked gone but before the file was unlinked
    ob._db.execute("UPDATE entries SET gone = 'delivered'")
    ob.close()
    again = new_outbox(tmp_path)
    assert again.count() == 0
    assert not (tmp_path / "outbox" / "spool" / "done.clip").exists()


def test_corrupt_index_is_quarantined_and_rebuilt_from_the_spool(tmp_path, caplog):
    ob = new_outbox(tmp_path)
    ob.put("a", b"one", "audio/wav", {"id": "a"})
    ob.put("b", b"two", "audio/wav", {"id": "b"})
    ob.close()
    db = tmp_path / "outbox" / "outbox.sqlite3"
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if p.exists():
            p.write_bytes(b"this is not a database" * 100)
    again = new_outbox(tmp_path)
    assert sorted(e.id for e in again.pending()) == ["a", "b"]
    assert list((tmp_path / "outbox" / "quarantine").glob("outbox.sqlite3.corrupt-*"))
    assert any("unreadable" in r.message for r in caplog.records)


def test_missing_spool_file_is_quarantined_at_open(tmp_path):
    ob = new_outbox(tmp_path)
    ob.put("lost", b"x", "audio/wav", {})
    ob.close()
    (tmp_path / "outbox" / "spool" / "lost.clip").unlink()
    again = new_outbox(tmp_path)
    assert again.count() == 0 and again.quarantined == 1


def test_unsafe_clip_ids_are_refused(tmp_path):
    ob = new_outbox(tmp_path)
    with pytest.raises(ValueError):
        ob.put("../../etc/passwd", b"x", "audio/wav", {})


def test_ledger_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    Ledger(path).append(clip="a", result="delivered", bytes=3)
    with path.open("ab") as f:
        f.write(b'{"clip": "b", "resu')          # power cut mid-write
    Ledger(path).append(clip="c", result="failed", error="x")
    read = read_ledger(path)
    assert [e["clip"] for e in read.entries] == ["a", "c"]
    assert read.unreadable == 1
    assert all(json.loads(line) for line in path.read_text().splitlines()[::2])


def test_a_full_index_is_an_oserror_the_dispatcher_retries_and_the_retry_succeeds(tmp_path):
    import errno

    ob = new_outbox(tmp_path)
    ob.put("a1", b"RIFF1", "audio/wav", {"id": "a1"})
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite now answers SQLITE_FULL
    big = {"id": "a2", "pad": "x" * 20000}
    with pytest.raises(OSError) as info:
        ob.put("a2", b"RIFF2", "audio/wav", big)
    assert info.value.errno == errno.ENOSPC and "outbox index" in str(info.value)
    ob._db.execute("PRAGMA max_page_count = 1000000")  # space is freed
    ob.put("a2", b"RIFF2", "audio/wav", big)           # what the dispatcher does on retry
    assert sorted(e.id for e in ob.pending()) == ["a1", "a2"]
    assert [ob.read(e) for e in ob.pending() if e.id == "a2"] == [b"RIFF2"]
