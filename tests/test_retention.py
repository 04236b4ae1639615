"""Retention and purge: old audio expires everywhere; `edge purge --yes` removes all of it."""

from __future__ import annotations

import os

import pytest

from edge.cli import main as edge
from edge.clock import FakeClock
from edge.errors import StateLockedError
from edge.files import LockFile
from edge.privacy.ledger import Ledger, read_ledger
from edge.privacy.places import lock_path, outbox_dir
from edge.privacy.retention import DAY_S, expire, purge
from edge.sinks.local import LocalDirSink
from edge.upload.queue import Outbox
from tests.upload_helpers import make_clip, upload_cfg

NOW = 1_800_000_000.0
A_OLD, A_NEW = "0a0a0a0a-0000-4000-8000-00000000000a", "0b0b0b0b-0000-4000-8000-00000000000b"
"""Activation ids, in the shape the recorder issues (only such names are ours to delete)."""


def age(path, days: float) -> None:
    t = NOW - days * DAY_S
    os.utime(path, (t, t))


def populate(cfg, clock):
    """Clips, false-activation audio, an outbox entry and a quarantined one; half of them old."""
    clips = cfg.under_state(cfg.output.clips_dir)
    sink = LocalDirSink(clips)
    old, new = make_clip(0.2, seed=1), make_clip(0.2, seed=2)
    sink.deliver(old)
    sink.deliver(new)
    for suffix in (".wav", ".json"):
        age(clips / f"{old.id}{suffix}", 40)
        age(clips / f"{new.id}{suffix}", 1)
    fa = cfg.state_path / "false_audio"
    fa.mkdir()
    (fa / f"{A_OLD}.wav").write_bytes(b"RIFF old")
    (fa / f"{A_NEW}.sealed").write_bytes(b"sealed new")
    age(fa / f"{A_OLD}.wav", 31)
    age(fa / f"{A_NEW}.sealed", 2)
    clock._wall = NOW - 35 * DAY_S
    ob = Outbox(outbox_dir(cfg), ledger=Ledger(cfg.state_path / "ledger.jsonl", clock),
                clock=clock)
    ob.put("queued-old", b"old audio", "audio/wav", {})
    clock._wall = NOW - 1 * DAY_S
    ob.put("queued-new", b"new audio", "audio/wav", {})
    q = outbox_dir(cfg) / "quarantine" / "bad.clip"
    q.write_bytes(b"garbled")
    age(q, 60)
    clock._wall = NOW
    return old, new, ob


def test_expire_deletes_everything_older_than_the_retention(tmp_path):
    cfg = upload_cfg(tmp_path, keep_local=True, retention_days=30)
    clock = FakeClock(wall=NOW)
    old, new, ob = populate(cfg, clock)
    removed = {r.label: r.files for r in expire(cfg, NOW, ob)}
    assert removed == {"local clips": 2, "outbox quarantine": 1, "false-activation audio": 1,
                       "outbox queue": 1, "speech-to-text queue": 0,
                       "speech-to-text quarantine": 0}
    clips = cfg.under_state("clips")
    assert sorted(p.name for p in clips.iterdir()) == [f"{new.id}.json", f"{new.id}.wav"]
    assert [p.name for p in (tmp_path / "false_audio").iterdir()] == [f"{A_NEW}.sealed"]
    assert [e.id for e in ob.pending()] == ["queued-new"]
    assert [e["clip"] for e in read_ledger(tmp_path / "ledger.jsonl").entries
            if e["result"] == "expired"] == ["queued-old"]


def test_retention_zero_keeps_everything(tmp_path):
    cfg = upload_cfg(tmp_path, keep_local=True, retention_days=0)
    _, _, ob = populate(cfg, FakeClock(wall=NOW))
    assert expire(cfg, NOW, ob) == []
    assert ob.count() == 2


def test_purge_removes_every_clip_the_outbox_and_activation_audio(tmp_path, capsys):
    cfg = upload_cfg(tmp_path, keep_local=True)
    _, _, ob = populate(cfg, FakeClock(wall=NOW))
    ob.close()
    (tmp_path / "config.toml").write_text(f'state_dir = "{tmp_path}"\n')
    assert edge(["purge", "--config", str(tmp_path / "config.toml")]) == 1
    out = capsys.readouterr().out
    assert "nothing deleted" in out and "would delete 4 file(s)" in out
    assert edge(["purge", "--yes", "--config", str(tmp_path / "config.toml")]) == 0
    out = capsys.readouterr().out
    assert "deleted 4 file(s)" in out and "(local clips)" in out
    assert "(false-activation audio)" in out and "(outbox queue)" in out
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in left) == ["config.toml", "daemon.lock", "ledger.jsonl"]
    last = read_ledger(tmp_path / "ledger.jsonl").entries[-1]
    assert last["result"] == "purged"


def test_purge_refuses_while_the_recorder_runs(tmp_path):
    cfg = upload_cfg(tmp_path)
    with LockFile(lock_path(cfg), "the recorder"), \
            pytest.raises(StateLockedError, match="stop it first"):
        purge(cfg)


def test_purge_only_touches_our_files_in_a_shared_clips_dir(tmp_path):
    shared = tmp_path / "home"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    cfg = upload_cfg(tmp_path / "state", keep_local=True)
    from edge.config import replace

    cfg = replace(cfg, output=replace(cfg.output, clips_dir=str(shared)))
    LocalDirSink(shared).deliver(make_clip(0.1))
    purge(cfg)
    assert [p.name for p in shared.iterdir()] == ["notes.txt"]
