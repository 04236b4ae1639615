"""The activation log under stress: SIGKILL mid-write, concurrent labels, idleness, meddling."""

from __future__ import annotations

import hashlib
import logging
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.activations import schema as activations_schema
from edge.activations import store as activations
from edge.activations.store import ActivationLog
from edge.audio import synth
from edge.audio.sources import ArraySource
from edge.cli import main as edge
from edge.clock import FakeClock
from edge.pipeline.events import DetectionEvent
from tests.activation_helpers import Harness, config, row, rows
from tests.device import build
from tests.fixtures.audio import phrase, prose
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edge.activations.store import ActivationLog, ActivationRow
    log = ActivationLog.open(Path(sys.argv[1]))
    period = log.open_period(1.7e9, {"m": 0.5})
    i = 0
    while True:
        i += 1
        log.record(ActivationRow(f"a{i}", 1.7e9 + i, "m", 0.5, 0.9, 3, f"clip-a{i}", 4.0, 0.5,
                                 "silence", "kept", False, period=period,
                                 period_heard_s=float(i)),
                   labels=[("false", "mqtt", 1.7e9 + i)])
        if i % 3 == 0:
            log.label(f"a{i - 1}", "true", "cli")
        print(i, flush=True)
""")


def test_sigkill_mid_write_leaves_no_half_row(tmp_path):
    db = tmp_path / "a.sqlite3"
    rng = random.Random(6)
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        acked = 0
        target = rng.randint(5, 60)
        for line in child.stdout:
            acked = int(line)
            if acked >= target:
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
        with ActivationLog.open(db, check=True) as log:
            assert log.integrity() == "ok"
            assert log.close_dangling_periods() == 1  # the killed writer's period
            got = log.rows()
            last = log.periods()[-1]
        newest = len(got)
        assert newest in (acked, acked + 1)  # every acknowledged row, and at most one more
        assert [r["id"] for r in got] == [f"a{i}" for i in range(1, newest + 1)]
        for r in got:  # every row whole: its labels, its history, its period
            history = r["label_history"]
            assert history and (r["label"], r["label_source"]) == (
                history[-1]["label"], history[-1]["source"])
            assert r["model"] == "m" and r["duration_s"] == 4.0 and r["period"] is not None
        assert last.end_reason == "unclean_stop"
        assert last.heard_s == float(newest)  # checkpointed by its last activation
        db.rename(tmp_path / f"run{acked}.sqlite3")  # next round: a fresh log
        for side in ("-wal", "-shm"):
            Path(f"{db}{side}").unlink(missing_ok=True)


def test_labels_arriving_while_activations_are_written(tmp_path):
    h = Harness(config(tmp_path), {i: 0.9 for i in range(40, 4000, 40)})
    errors: list[BaseException] = []
    announced: list[str] = []

    def label_on_announce(ev: object) -> None:  # as MQTT would, the moment a wake is seen
        if isinstance(ev, DetectionEvent) and not ev.ignored:
            try:
                h.plugin.label(ev.activation_id, "false", "mqtt").result(10)
                announced.append(ev.activation_id)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    h.bus.subscribe("mqtt-like", label_on_announce)
    done = threading.Event()

    def cli_like() -> None:  # another process labelling whatever is already logged
        with ActivationLog.open(tmp_path / "activations.sqlite3") as other:
            n = 0
            while not done.is_set():
                n += 1
                try:
                    other.label("last", "true" if n % 2 else "false", "cli")
                except activations.ActivationLogError as exc:
                    if "empty" not in str(exc):
                        errors.append(exc)

    t = threading.Thread(target=cli_like)
    t.start()
    loud = {i + k for i in range(40, 4000, 40) for k in range(1, 6)}
    h.feed(4000, loud=loud)
    done.set()
    t.join()
    h.close()
    assert errors == []
    got = rows(tmp_path / "activations.sqlite3")
    assert len(got) == h.recorder.stats.detections == 99
    assert sorted(announced) == sorted(r["id"] for r in got)
    with ActivationLog.open(tmp_path / "activations.sqlite3") as log:
        assert log.integrity() == "ok"
        for r in log.rows():
            history = r["label_history"]
            assert any(x["source"] == "mqtt" for x in history)  # no in-flight label lost
            assert (r["label"], r["label_source"]) == (history[-1]["label"],
                                                       history[-1]["source"])
            assert all(a != b for a, b in zip(history, history[1:], strict=False))


class GatedSource(ArraySource):
    """Pauses at frame ``at`` and before the end, so a test can look at the disk."""

    def __init__(self, samples: np.ndarray, at: int) -> None:
        super().__init__(samples)
        self.at, self.n = at, 0
        self.reached, self.go = threading.Event(), threading.Event()
        self.ended, self.finish = threading.Event(), threading.Event()

    def read(self) -> np.ndarray | None:
        self.n += 1
        if self.n == self.at:
            self.reached.set()
            self.go.wait(30)
        frame = super().read()
        if frame is None:
            self.ended.set()
            self.finish.wait(30)
        return frame


def snapshot(db: Path) -> dict[str, tuple[int, int, str] | None]:
    out: dict[str, tuple[int, int, str] | None] = {}
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if f.exists():
            st = f.stat()
            out[f.name] = (st.st_mtime_ns, st.st_size, hashlib.sha256(f.read_bytes()).hexdigest())
        else:
            out[f.name] = None
    return out


def test_no_disk_writes_while_idle(tmp_path, store):
    cfg = config(tmp_path)
    stream = synth.concat([synth.silence(5.0), prose(40.0), synth.silence(20.0)])
    source = GatedSource(stream, at=10)
    device = build(cfg, source, clock=FakeClock())
    daemon, plugin = device.daemon, device.activations
    assert plugin is not None
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        assert source.reached.wait(30)
        source.go.set()
        assert wait_for(lambda: plugin.writes == 1)  # the listening period's start
        db = tmp_path / "activations.sqlite3"
        before = snapshot(db)
        assert source.ended.wait(60)
        after = snapshot(db)
    finally:
        source.go.set()
        source.finish.set()
        runner.join(60)
    assert daemon.recorder.stats.detections == 0
    assert daemon.recorder.stats.frames > 60 / 0.08  # a minute of audio heard...
    assert after == before                           # ...without touching the disk
    assert plugin.writes == 2                        # then the period's end, at shutdown


def test_a_corrupt_log_never_stops_the_device_listening(tmp_path, store, caplog):
    db = tmp_path / "activations.sqlite3"
    db.write_bytes(b"garbage, not a database " * 200)
    cfg = config(tmp_path)
    stream = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                           phrase("turn on the kitchen lights"), synth.silence(3.0)])
    with caplog.at_level(logging.ERROR):
        daemon = build(cfg, ArraySource(stream), clock=FakeClock()).daemon
        daemon.run(install_signals=False)
    assert daemon.recorder.stats.clips == 1
    assert len(list((tmp_path / "clips").glob("*.wav"))) == 1
    text = caplog.text
    assert "is corrupt" in text and f"mv {db} {db}.bad" in text
    assert "the device keeps listening" in text


def test_writes_held_while_the_log_is_corrupt_are_saved_once_it_is_moved_aside(tmp_path):
    db = tmp_path / "activations.sqlite3"
    db.write_bytes(b"garbage, not a database " * 200)
    h = Harness(config(tmp_path), {40: 0.9, 100: 0.9})
    h.feed(90, loud=set(range(41, 50)))
    assert wait_for(lambda: len(h.plugin._ops) == 2)  # noqa: SLF001 - period start + row
    db.rename(tmp_path / "bad.sqlite3")
    h.feed(90, loud=set(range(101, 110)))
    h.close()
    assert [r["wall_time"] for r in rows(db)] == pytest.approx(
        [1_700_000_000.0 + 40 * 0.08, 1_700_000_000.0 + 100 * 0.08])


def test_a_locked_log_holds_writes_until_it_is_free(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(activations_schema, "BUSY_TIMEOUT_MS", 50)
    h = Harness(config(tmp_path), {40: 0.9, 100: 0.9})
    db = tmp_path / "activations.sqlite3"
    h.feed(70, loud=set(range(41, 50)))
    assert wait_for(lambda: h.plugin.writes == 2)  # the period's start, the first row
    meddler = sqlite3.connect(db, isolation_level=None)
    meddler.execute("BEGIN EXCLUSIVE")
    h.feed(70, loud=set(range(101, 110)))
    assert wait_for(lambda: len(h.plugin._ops) == 1)  # noqa: SLF001 - the second row, held
    assert edge(["label", "1", "false", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "is locked by another program" in err and "close the program holding it" in err
    meddler.execute("COMMIT")
    meddler.close()
    h.close()
    assert [r["outcome"] for r in rows(db)] == ["kept", "kept"]


def test_a_row_retried_after_a_failure_is_not_duplicated(tmp_path):
    with ActivationLog.open(tmp_path / "a.sqlite3") as log:
        log.record(row("a1"))
        log.record(row("a1"))
        assert len(log.rows()) == 1
