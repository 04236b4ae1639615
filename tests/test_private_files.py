"""Files: names from data never leave their folder, purge and retention delete only what
the recorder wrote, and everything we make is private whatever the umask (issue 16)."""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edge.audio import synth
from edge.cli import main as edge
from edge.config import ActivationsConfig, replace
from edge.dashboard.store import FleetStore
from edge.files import ForeignTreeError
from edge.privacy import crypto
from edge.privacy.bundle import pack
from edge.privacy.places import outbox_dir
from edge.privacy.retention import DAY_S, expire, purge
from edge.sinks.local import LocalDirSink, wav_bytes
from edge.upload.queue import Outbox
from tests.device import build
from tests.fakes import HeldSource
from tests.fixtures.audio import phrase
from tests.fuzz_strategies import NASTY, TEXT
from tests.upload_helpers import make_clip, upload_cfg
from tests.waiting import wait_for

NOW = time.time()
MADE_NAME = re.compile(r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                       r"|clip-[0-9a-f]{16})\.(?:wav|json)")


@pytest.fixture(scope="module")
def owner_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    private, public = crypto.new_keypair()
    key = tmp_path_factory.mktemp("key") / "owner.key"
    crypto.write_private_key(key, private)
    return key, public


def sealed_clip(public: str, clip_id: Any, where: Path) -> Path:
    """A sealed clip whose metadata says ``id: clip_id``, as a hostile sender could make."""
    clip = make_clip(0.1)
    where.write_bytes(crypto.Sealer(public).seal(pack({"id": clip_id}, wav_bytes(clip))))
    return where


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


# -- 1. names that come from data -----------------------------------------------------------

def test_decrypt_never_writes_outside_its_output_folder(tmp_path, owner_key):
    key, public = owner_key
    victim = tmp_path / "home" / ".config" / "x"
    victim.parent.mkdir(parents=True)
    victim.with_suffix(".wav").write_bytes(b"the owner's own file")
    out = tmp_path / "out"
    hostile = [str(victim), "../../escape", "../home/.config/x", "a/b", "x\x00y", "..", "",
               ".", "/", 42, None, ["list"], "A" * 5000]
    (tmp_path / "in").mkdir()
    clips = [sealed_clip(public, h, tmp_path / "in" / f"{k}.sealed")
             for k, h in enumerate(hostile)]
    before = snapshot(tmp_path / "home")
    assert edge(["decrypt", "--key", str(key), "--out", str(out), *map(str, clips)]) == 0
    assert snapshot(tmp_path / "home") == before
    written = [p for p in tmp_path.rglob("*") if p.is_file()
               and not p.is_relative_to(tmp_path / "in")
               and not p.is_relative_to(tmp_path / "home")]
    assert written and all(p.parent == out and MADE_NAME.fullmatch(p.name) for p in written)
    assert {p.stat().st_mode & 0o777 for p in written} == {0o600}


def test_decrypt_never_replaces_a_file_without_force(tmp_path, owner_key, capsys):
    key, public = owner_key
    clip_id = str(uuid.uuid4())
    sealed = sealed_clip(public, clip_id, tmp_path / "c.sealed")
    out = tmp_path / "out"
    args = ["decrypt", "--key", str(key), "--out", str(out), str(sealed)]
    assert edge(args) == 0
    wav = (out / f"{clip_id}.wav").read_bytes()
    (out / f"{clip_id}.wav").write_bytes(b"mine")
    capsys.readouterr()
    assert edge(args) == 1
    err = capsys.readouterr().out
    assert "exists; give --force to replace it" in err and len(err.splitlines()) == 1
    assert (out / f"{clip_id}.wav").read_bytes() == b"mine"
    (out / f"{clip_id}.wav").unlink()
    (out / f"{clip_id}.wav").symlink_to(tmp_path / "target")  # nor through a planted link
    assert edge(args) == 1 and not (tmp_path / "target").exists()
    assert edge([*args, "--force"]) == 0
    assert (out / f"{clip_id}.wav").read_bytes() == wav
    assert not (out / f"{clip_id}.wav").is_symlink() and not (tmp_path / "target").exists()
    assert (out / f"{clip_id}.wav").stat().st_mode & 0o777 == 0o600


def test_log_export_never_replaces_a_file_without_force(tmp_path, capsys):
    from edge.activations.store import ActivationLog

    db = tmp_path / "activations.sqlite3"
    ActivationLog.open(db).close()
    mine = tmp_path / "wakes.csv"
    mine.write_text("mine")
    assert edge(["log", "--db", str(db), "--export", str(mine)]) == 2
    assert "give --force" in capsys.readouterr().err and mine.read_text() == "mine"
    assert edge(["log", "--db", str(db), "--export", str(mine), "--force"]) == 0
    assert mine.read_text() != "mine" and mine.stat().st_mode & 0o777 == 0o600


IDS = st.one_of(TEXT, NASTY, st.text(st.sampled_from("./\x00a-é"), max_size=12),
                st.uuids().map(str), st.integers(), st.none(), st.booleans(),
                st.lists(TEXT, max_size=2), st.dictionaries(TEXT, TEXT, max_size=1))


@given(clip_id=IDS)
@example(clip_id="../precious")
@example(clip_id="/etc/passwd")
@example(clip_id="precious")
def test_any_id_in_a_sealed_clip_writes_only_inside_the_output_folder(owner_key, clip_id):
    key, public = owner_key
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "precious.wav").write_bytes(b"precious")
        out = base / "out"
        out.mkdir()
        (out / "precious.wav").write_bytes(b"precious too")
        sealed = sealed_clip(public, clip_id, base / "in.sealed")
        args = ["decrypt", "--key", str(key), "--out", str(out), str(sealed)]
        before = snapshot(base)
        assert edge(args) == 0
        after = snapshot(base)
        new = set(after) - set(before)
        assert {k: after[k] for k in before} == before  # nothing replaced
        assert len(new) == 2 and all(Path(n).parent == Path("out")
                                     and MADE_NAME.fullmatch(Path(n).name) for n in new)
        assert edge(args) == 1  # the same clip again: refused, nothing replaced
        assert snapshot(base) == after


# -- 3. purge and retention delete only what the recorder wrote -----------------------------

def age(path: Path, days: float) -> None:
    t = NOW - days * DAY_S
    os.utime(path, (t, t), follow_symlinks=False)


def shared_cfg(tmp_path: Path) -> Any:
    shared = tmp_path / "home"
    shared.mkdir(exist_ok=True)
    cfg = upload_cfg(tmp_path / "state", keep_local=True, retention_days=30)
    return replace(cfg, output=replace(cfg.output, clips_dir=str(shared))), shared


def test_purge_and_retention_keep_the_owners_own_files_in_a_shared_clips_dir(tmp_path):
    cfg, shared = shared_cfg(tmp_path)
    theirs = str(uuid.uuid4())
    for name in ("notes.wav", "x.json", "song.sealed", ".notes.wav.tmp-1", f"{theirs}.wav"):
        (shared / name).write_bytes(b"the owner's")
        age(shared / name, 100)
    os.chown(shared / f"{theirs}.wav", 4242, 4242)  # our name, another user's file
    ours = make_clip(0.1)
    LocalDirSink(shared).deliver(ours)
    for p in shared.glob(f"{ours.id}.*"):
        age(p, 100)
    removed = {r.label: r.files for r in expire(cfg, NOW)}
    assert removed["local clips"] == 2
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        ["notes.wav", "x.json", "song.sealed", ".notes.wav.tmp-1", f"{theirs}.wav"])
    LocalDirSink(shared).deliver(make_clip(0.1, seed=3))
    purge(cfg)
    assert len(list(shared.iterdir())) == 5


@given(names=st.lists(st.one_of(TEXT, st.uuids().map(str)).flatmap(
    lambda stem: st.sampled_from(["", ".wav", ".json", ".sealed", ".clip"]).map(
        lambda suffix: stem + suffix)), max_size=8, unique=True))
def test_purge_deletes_only_names_the_recorder_issues(names):
    issued = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                        r"\.(?:wav|json|sealed)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg, shared = shared_cfg(Path(tmp))
        made = []
        for name in names:
            if "/" in name or "\x00" in name or name in ("", ".", ".."):
                continue  # not one file name
            try:
                (shared / name).write_bytes(b"x")
            except OSError:
                continue  # too long for the file system
            made.append(name)
        purge(cfg)
        left = {p.name for p in shared.iterdir()}
        assert left == {n for n in made if not issued.fullmatch(n)}


def plant_precious(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("notes.txt", "a.wav", "b.clip", f"{uuid.uuid4()}.wav"):
        (folder / name).write_bytes(b"precious " + name.encode())
        age(folder / name, 100)
    return snapshot(folder)


def test_a_symlink_in_the_state_tree_never_leads_purge_outside_it(tmp_path):
    cfg = upload_cfg(tmp_path / "state", keep_local=True, retention_days=30)
    Outbox(outbox_dir(cfg)).close()
    quarantine = outbox_dir(cfg) / "quarantine"
    quarantine.rmdir()
    precious = {name: plant_precious(tmp_path / name) for name in ("q", "fa", "files")}
    quarantine.symlink_to(tmp_path / "q")  # the folder is a link
    (cfg.state_path / "false_audio").symlink_to(tmp_path / "fa")
    clips = cfg.under_state(cfg.output.clips_dir)
    clips.mkdir()
    for f in (tmp_path / "files").iterdir():  # links inside a folder of ours, named like ours
        (clips / f"{uuid.uuid4()}.wav").symlink_to(f)
        (outbox_dir(cfg) / "spool" / f"{f.stem.replace('.', '')}x.clip").symlink_to(f)
    (outbox_dir(cfg) / "spool" / "folder.clip").symlink_to(tmp_path / "files")
    (clips / f"{uuid.uuid4()}.json").symlink_to(tmp_path / "files")
    (tmp_path / "config.toml").write_text(f'state_dir = "{cfg.state_path}"\n'
                                          '[output]\nkeep_local = true\n')
    expire(cfg, NOW)
    assert edge(["purge", "--yes", "--config", str(tmp_path / "config.toml")]) == 0
    assert {name: snapshot(tmp_path / name) for name in precious} == precious


def test_purge_refuses_a_state_tree_owned_by_another_user(tmp_path, capsys):
    cfg = upload_cfg(tmp_path / "state", keep_local=True, retention_days=30)
    LocalDirSink(cfg.under_state(cfg.output.clips_dir)).deliver(make_clip(0.1))
    before = snapshot(cfg.state_path)
    os.chown(cfg.state_path, 4242, 4242)
    (tmp_path / "config.toml").write_text(f'state_dir = "{cfg.state_path}"\n'
                                          '[output]\nkeep_local = true\n')
    for yes in ([], ["--yes"]):
        assert edge(["purge", *yes, "--config", str(tmp_path / "config.toml")]) == 2
        err = capsys.readouterr().err
        assert "run as the service user" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ForeignTreeError, match="run as the service user"):
        expire(cfg, NOW + 100 * DAY_S)
    assert snapshot(cfg.state_path) == before


def test_measure_clears_only_its_own_snippets_and_plots_from_an_earlier_run(tmp_path):
    from edge.commands.measure import _clear_previous

    out = tmp_path / "report"
    (out / "snippets").mkdir(parents=True)
    (tmp_path / "photos").mkdir()
    (out / "plots").symlink_to(tmp_path / "photos")
    for name in ("notes.wav", "00001_talk_hey_jarvis_1.20s.wav"):
        (out / "snippets" / name).write_bytes(b"x")
    for name in ("holiday.png", "det.png", "timeline_00001.png"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    _clear_previous(out)
    assert [p.name for p in (out / "snippets").iterdir()] == ["notes.wav"]
    assert len(list((tmp_path / "photos").iterdir())) == 3


# -- 10. files are private ------------------------------------------------------------------

def modes(folder: Path) -> dict[str, int]:
    """Mode bits of everything under ``folder`` (itself included); a symlink fails."""
    out = {".": folder.lstat().st_mode}
    for p in folder.rglob("*"):
        assert not p.is_symlink(), p
        out[str(p.relative_to(folder))] = p.lstat().st_mode
    return out


def not_private(found: dict[str, int]) -> list[str]:
    return [f"{name}: {stat.filemode(m)}" for name, m in found.items()
            if (stat.S_ISDIR(m) and m & 0o777 != 0o700)
            or (not stat.S_ISDIR(m) and m & 0o777 != 0o600)]


@pytest.fixture
def no_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_everything_the_recorder_makes_is_private_whatever_the_umask(tmp_path, no_umask,
                                                                     https_receiver,
                                                                     owner_key):
    key, public = owner_key
    rx = https_receiver()
    state = tmp_path / "state" / "made" / "by" / "us"
    cfg = upload_cfg(state, "https", keep_local=True, encrypt_to=public,
                     https={"url": rx.url, "ca": str(rx.ca_path)})
    cfg = replace(cfg, activations=ActivationsConfig(keep_false_activation_audio=True))
    source = HeldSource(synth.concat([
        synth.silence(1.5), phrase("hey jarvis"), synth.silence(0.3),
        phrase("what is the weather like today"), synth.silence(2.5),
        synth.silence(1.5), phrase("hey jarvis"), synth.silence(4.0)]))
    device = build(cfg, source)
    t = threading.Thread(target=device.daemon.run, kwargs={"install_signals": False})
    t.start()
    try:
        wait_for(lambda: len(rx.ok_bodies()) == 1, what="the clip to be delivered")
        wait_for(lambda: list((state / "false_audio").glob("*.sealed")), what="false audio")
        running = modes(tmp_path / "state")
    finally:
        source.release.set()
        t.join(60)
    assert {f"made/by/us/{name}" for name in (
        "outbox/outbox.sqlite3-wal", "outbox/outbox.sqlite3-shm", "activations.sqlite3-wal",
        "activations.sqlite3-shm")} <= set(running)
    assert not_private(running) == []
    assert not_private(modes(tmp_path / "state")) == []

    fleet = FleetStore.open(tmp_path / "dash" / "new" / "fleet.sqlite3")
    with fleet.batch() as c:
        FleetStore.touch(c, "0123456789abcdef", NOW)
    assert not_private(modes(tmp_path / "dash")) == []
    fleet.close()

    sealed = sorted((state / "clips").glob("*.sealed"))
    assert sealed
    out = tmp_path / "opened" / "here"
    assert edge(["decrypt", "--key", str(key), "--out", str(out), *map(str, sealed)]) == 0
    assert not_private(modes(tmp_path / "opened")) == []
    assert len(list(out.iterdir())) == 2 * len(sealed)


@given(umask=st.integers(0, 0o777))
def test_our_files_folders_and_sqlite_side_files_are_private_under_any_umask(umask):
    import sqlite3

    from edge.files import atomic_write, private_db, private_dir

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        old = os.umask(umask)
        try:
            private_dir(base / "a" / "b")
            atomic_write(base / "a" / "b" / "f", b"x")
            db = sqlite3.connect(private_db(base / "a" / "c" / "d.sqlite3"))
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("CREATE TABLE t (x)")
            found = modes(base / "a")
            db.close()
        finally:
            os.umask(old)
    assert {"c/d.sqlite3-wal", "c/d.sqlite3-shm"} <= set(found)
    assert not_private(found) == []


def test_an_in_memory_database_leaves_no_file(tmp_path, monkeypatch):
    """``:memory:`` is SQLite's in-memory database: no file of that name in the cwd."""
    import sqlite3

    from edge.files import private_db

    monkeypatch.chdir(tmp_path)
    db = sqlite3.connect(private_db(Path(":memory:")))
    db.execute("CREATE TABLE t (x)")
    db.close()
    assert list(tmp_path.iterdir()) == []
