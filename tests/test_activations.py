"""The activation log: rows, outcomes, flags, labels, listening periods and statistics."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import soundfile as sf

from edge.activations.stats import compute, durations, render
from edge.activations.store import ActivationLog, ActivationLogError, parse_since
from edge.cli import main as edge
from edge.config import RecordConfig, UploadConfig
from edge.errors import UsageError
from edge.privacy.bundle import unpack
from edge.privacy.crypto import new_keypair, open_sealed
from edge.privacy.retention import expire, purge
from edge.wake.verifier import Candidate, ScoreMarginVerifier
from tests.activation_helpers import Harness, config, dead_pid, row, rows

FRAME_S = 0.08
T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = ActivationLog.open(tmp_path / "a.sqlite3")
    yield s
    s.close()


# ---- the store --------------------------------------------------------------

def test_database_is_wal_with_full_sync(tmp_path):
    ActivationLog.open(tmp_path / "a.sqlite3").close()
    conn = sqlite3.connect(tmp_path / "a.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert oct(os.stat(tmp_path / "a.sqlite3").st_mode & 0o777) == "0o600"


def test_an_activation_is_written_once_even_if_retried(store):
    assert store.record(row("a1")) == 1
    assert store.record(row("a1")) == 1
    (r,) = store.rows()
    assert (r["id"], r["outcome"], r["label"], r["label_source"]) == ("a1", "kept", "unknown",
                                                                      "auto")
    assert r["time"] == "2023-11-14T22:13:20.000Z"


def test_latest_label_wins_and_history_is_kept(store):
    store.record(row("a1"))
    store.label("a1", "false", "button", at=T0 + 1)
    store.label("a1", "false", "button", at=T0 + 2)  # a repeat (an MQTT redelivery): harmless
    store.label("1", "true", "cli", at=T0 + 3)
    (r,) = store.rows()
    assert (r["label"], r["label_source"]) == ("true", "cli")
    assert [(h["label"], h["source"]) for h in r["label_history"]] == [
        ("false", "button"), ("true", "cli")]


def test_activations_are_found_by_number_id_prefix_or_last(store):
    store.record(row("abcd1234-0000"))
    store.record(row("abcd5678-0000"))
    assert store.label("2", "false", "cli") == "abcd5678-0000"
    assert store.label("abcd1", "false", "cli") == "abcd1234-0000"
    assert store.label("last", "true", "cli") == "abcd5678-0000"
    with pytest.raises(ActivationLogError, match="more than one"):
        store.label("abcd", "true", "cli")
    with pytest.raises(ActivationLogError, match="no activation 99 in the log"):
        store.label("99", "true", "cli")
    with pytest.raises(UsageError, match="not an activation number or id"):
        store.label("yesterday's", "true", "cli")


@pytest.mark.parametrize("label", ["maybe", "False", "1", ""])
def test_a_label_other_than_true_or_false_is_refused(store, label):
    store.record(row("a1"))
    with pytest.raises(UsageError, match="give true .* or false"):
        store.label("a1", label, "cli")


def test_upload_acknowledged_before_or_after_the_row_is_written(store):
    assert store.mark_uploaded("clip-a1") is False  # still in flight: remembered
    store.record(row("a1"))
    store.record(row("a2"))
    assert store.mark_uploaded("clip-a2") is True
    assert [r["outcome"] for r in store.rows()] == ["uploaded", "uploaded"]


def test_dangling_period_of_a_dead_daemon_is_closed_at_its_last_checkpoint(store):
    n = store.open_period(T0, {"m": 0.5})
    store.checkpoint(n, 3600.0, T0 + 3600)
    store._conn.execute("UPDATE listening_periods SET pid = ? WHERE n = ?", (dead_pid(), n))
    running = store.open_period(T0, {"m": 0.5})  # this process: still running
    assert store.close_dangling_periods() == 1
    p, q = store.periods()
    assert (p.end_wall, p.heard_s, p.end_reason) == (T0 + 3600, 3600.0, "unclean_stop")
    assert q.n == running and q.end_wall is None


@pytest.mark.parametrize("text,expected", [
    ("2024-05-01", 1714521600.0),
    ("2024-05-01T13:00Z", 1714568400.0),
    ("2024-05-01T15:00+02:00", 1714568400.0),
    ("7d", T0 - 7 * 86400),
    ("12h", T0 - 12 * 3600),
])
def test_since_takes_dates_times_and_ages(text, expected):
    assert parse_since(text, now=T0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "7w", "", "d"])
def test_a_malformed_since_is_refused_with_the_formats(text):
    with pytest.raises(UsageError, match="is not a date; give YYYY-MM-DD"):
        parse_since(text)


def test_a_corrupt_file_is_reported_with_what_to_do(tmp_path):
    bad = tmp_path / "a.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ActivationLogError, match=r"is corrupt .*move it aside \(mv "):
        ActivationLog.open(bad)


# ---- statistics ---------------------------------------------------------------

def test_stats_rates_per_model_and_threshold(store):
    a = store.open_period(T0, {"m": 0.5}, heard_s=7200.0, end_wall=T0 + 7200,
                          end_reason="stopped")
    b = store.open_period(T0 + 10000, {"m": 0.7}, heard_s=3600.0, end_wall=T0 + 13600,
                          end_reason="stopped")
    store.record(row("t1", wall_time=T0 + 100, period=a))
    store.record(row("f1", wall_time=T0 + 200, period=a, outcome="no_speech", clip_id=None,
                     likely_false=True, flags=("no_speech",), duration_s=4.5))
    store.record(row("f2", wall_time=T0 + 300, period=a, duration_s=25.0))
    store.label("f2", "false", "dashboard")
    store.record(row("f3", wall_time=T0 + 10100, threshold=0.7, period=b,
                     outcome="cancelled_by_user", clip_id=None, likely_false=True,
                     flags=("cancelled_by_user",), duration_s=2.0))
    store.record(row("t2", wall_time=T0 + 10200, threshold=0.7, period=b, likely_false=True,
                     flags=("verifier",)))
    store.label("t2", "true", "cli")  # flagged, but a person says it was meant
    report = compute(store, now=T0 + 20000)
    assert report["listening_hours"] == pytest.approx(3.0)
    c = report["counts"]
    assert (c["activations"], c["labelled_false"], c["labelled_true"],
            c["flagged_likely_false"], c["false"]) == (5, 1, 1, 3, 3)
    assert report["rates_per_hour"]["false"] == pytest.approx(1.0)
    assert report["rates_per_hour"]["labelled_false"] == pytest.approx(1 / 3, abs=1e-4)
    g5, g7 = report["by_model_threshold"]
    assert (g5["threshold"], g5["hours"], g5["false"], g5["false_per_hour"]) == (0.5, 2.0, 2, 1.0)
    assert (g7["threshold"], g7["hours"], g7["false"], g7["false_per_hour"]) == (0.7, 1.0, 1, 1.0)
    d = report["false_durations"]
    assert (d["count"], d["min_s"], d["median_s"], d["max_s"], d["over_20_s"]) == (
        3, 2.0, 4.5, 25.0, 1)
    text = render(report)
    assert "Listening: 3.00 h" in text and "Dubois" in text
    assert json.loads(json.dumps(report)) == report


def test_stats_since_counts_only_the_listening_after_it(store):
    store.open_period(T0, {"m": 0.5}, heard_s=7200.0, end_wall=T0 + 7200, end_reason="stopped")
    store.record(row("early", wall_time=T0 + 60))
    store.record(row("late", wall_time=T0 + 5000, label="false", label_source="cli"))
    report = compute(store, since=T0 + 3600, now=T0 + 9000)
    assert report["listening_hours"] == pytest.approx(1.0)
    assert report["counts"]["activations"] == 1
    assert report["rates_per_hour"]["false"] == pytest.approx(1.0)


def test_duration_histogram_buckets_match_the_published_ranges():
    d = durations([1.0, 3.0, 21.0, 43.0, 50.0])
    assert [b["count"] for b in d["histogram"]] == [1, 1, 0, 0, 1, 1, 1]
    assert d["histogram"][-1] == {"from_s": 45.0, "to_s": None, "count": 1}


# ---- the verifier -------------------------------------------------------------

def test_score_margin_verifier_rejects_brief_marginal_wakes_only():
    v = ScoreMarginVerifier(margin=0.1, min_frames=2)
    assert v.verify(Candidate("a", "m", 0.5, 0.55, 1)).accept is False
    assert v.verify(Candidate("a", "m", 0.5, 0.55, 3)).accept is True
    assert v.verify(Candidate("a", "m", 0.5, 0.95, 1)).accept is True


# ---- the plugin on the recorder's real events -----------------------------------

def session(h: Harness) -> None:
    """A kept clip, a no-speech wake, a cancelled one and one aborted by mute."""
    h.feed(43)
    h.feed(30, loud=set(range(43, 56)))          # speech, then silence: kept
    h.feed(127)                                  # 100: a blip, then no speech
    h.feed(5, loud=set(range(200, 206)))         # 200: a wake, then...
    h.recorder.cancel()                          # ..."that wasn't for you"
    h.feed(95)
    h.feed(3, loud={301, 302})
    h.recorder.mute()                            # 300: muted mid-recording
    h.recorder.unmute()
    h.feed(50)


SCORES = {40: 0.9, 41: 0.95, 42: 0.8, 100: 0.55, 200: 0.9, 300: 0.9}


def test_every_outcome_is_logged_with_its_flags(tmp_path):
    cfg = config(tmp_path, verifier="score_margin")
    h = Harness(cfg, SCORES)
    session(h)
    h.close()
    got = rows(tmp_path / "activations.sqlite3")
    assert [(r["outcome"], r["end_reason"], r["likely_false"], r["flags"]) for r in got] == [
        ("kept", "silence", 0, ""),
        ("no_speech", "no_speech", 1, "no_speech,verifier"),
        ("cancelled_by_user", "cancelled_by_user", 1, "cancelled_by_user"),
        ("aborted_by_mute", "aborted_by_mute", 1, "aborted_by_mute"),
    ]
    kept = got[0]
    assert (kept["peak_score"], kept["frames_over"]) == (pytest.approx(0.95), 3)
    assert kept["clip_id"] == h.clips[0].id
    assert kept["wall_time"] == pytest.approx(T0 + 40 * FRAME_S)
    assert got[1]["verifier_accept"] == 0 and got[0]["verifier_accept"] == 1
    assert all(r["label"] == "unknown" and r["audio_file"] is None for r in got)
    assert not (tmp_path / "false_audio").exists()  # opt-in only


def test_listening_periods_follow_mute_and_count_heard_audio(tmp_path):
    h = Harness(config(tmp_path), {})
    h.feed(100)
    h.recorder.mute()
    h.clock.advance(600)                          # ten muted minutes hear nothing
    h.recorder.unmute()
    h.feed(50)
    h.close()
    with ActivationLog.open(tmp_path / "activations.sqlite3") as s:
        p, q = s.periods()
    assert (p.heard_s, p.end_reason, q.heard_s, q.end_reason) == (
        pytest.approx(100 * FRAME_S), "muted", pytest.approx(50 * FRAME_S), "stopped")
    assert p.models == {"m": 0.5}
    assert q.start_wall - p.start_wall >= 600


def test_a_threshold_changed_at_run_time_starts_a_new_period(tmp_path):
    h = Harness(config(tmp_path), {})
    h.feed(50)
    h.recorder.set_threshold("m", 0.7)  # as MQTT's set_threshold does, between frames
    h.feed(25)
    h.close()
    with ActivationLog.open(tmp_path / "activations.sqlite3") as s:
        p, q = s.periods()
    assert (p.models, p.heard_s, p.end_reason) == ({"m": 0.5}, pytest.approx(4.0),
                                                   "threshold_changed")
    assert (q.models, q.heard_s, q.end_reason) == ({"m": 0.7}, pytest.approx(2.0), "stopped")


def test_labels_for_an_activation_still_recording_are_applied_when_it_ends(tmp_path):
    h = Harness(config(tmp_path), {40: 0.9})
    h.feed(45, loud={42, 43, 44})
    in_flight = h.recorder._rec.activation_id  # noqa: SLF001 - the id MQTT would have seen
    assert h.plugin.label(in_flight, "false", "mqtt").result(10) == in_flight
    h.feed(30)
    assert h.plugin.label("last", "true", "dashboard").result(10) == in_flight
    h.close()
    with ActivationLog.open(tmp_path / "activations.sqlite3") as s:
        (r,) = s.rows()
    assert (r["label"], r["label_source"]) == ("true", "dashboard")
    assert [x["source"] for x in r["label_history"]] == ["mqtt", "dashboard"]


def test_checkpoints_come_every_checkpoint_s_of_listening(tmp_path):
    h = Harness(config(tmp_path, checkpoint_s=2.0), {})
    h.feed(130)  # 10.4 s: checkpoints at 2, 4, 6, 8 and 10 s
    h.close()
    assert h.plugin.writes == 1 + 5 + 1  # the period's start, five checkpoints, its end


def test_false_wake_audio_is_kept_only_when_opted_in(tmp_path):
    h = Harness(config(tmp_path, keep_false_activation_audio=True), {40: 0.9, 100: 0.9})
    h.feed(43)
    h.feed(30, loud=set(range(43, 56)))  # a kept clip: its audio is the sink's, not ours
    h.feed(100)                          # 100: no speech: discarded, but its audio kept here
    h.close()
    _, r = rows(tmp_path / "activations.sqlite3")
    assert r["audio_file"] == f"false_audio/{r['id']}.wav"
    audio, rate = sf.read(tmp_path / r["audio_file"], dtype="int16")
    assert rate == 16000 and len(audio) == pytest.approx(r["duration_s"] * 16000, abs=1280)
    assert [p.name for p in (tmp_path / "false_audio").iterdir()] == [f"{r['id']}.wav"]


def test_false_wake_audio_is_sealed_when_encryption_at_rest_is_on(tmp_path):
    private, public = new_keypair()
    cfg = config(tmp_path, keep_false_activation_audio=True,
                 upload=UploadConfig(encrypt_to=public))
    h = Harness(cfg, {40: 0.9})
    h.feed(100)
    h.close()
    (r,) = rows(tmp_path / "activations.sqlite3")
    sealed = (tmp_path / r["audio_file"]).read_bytes()
    assert r["audio_file"].endswith(".sealed") and b"RIFF" not in sealed
    meta, wav = unpack(open_sealed(sealed, private))
    assert meta["activation_id"] == r["id"] and wav.startswith(b"RIFF")
    key = tmp_path / "owner.key"
    key.write_text(private)
    assert edge(["decrypt", "--key", str(key), "--out", str(tmp_path / "open"),
                 str(tmp_path / r["audio_file"])]) == 0
    audio, rate = sf.read(tmp_path / "open" / f"{r['id']}.wav", dtype="int16")
    assert rate == 16000 and len(audio) == pytest.approx(r["duration_s"] * 16000, abs=1280)


def test_retention_and_purge_cover_kept_false_wake_audio(tmp_path):
    cfg = config(tmp_path, keep_false_activation_audio=True,
                 upload=UploadConfig(retention_days=30))
    h = Harness(cfg, {40: 0.9, 200: 0.9})
    h.feed(100)
    h.clock.advance(40 * 86400)
    h.feed(200)
    h.close()
    old, new = rows(tmp_path / "activations.sqlite3")
    os.utime(tmp_path / old["audio_file"], (T0, T0))  # files age by their write time
    expire(cfg, h.clock.wall())
    assert not (tmp_path / old["audio_file"]).exists()
    assert (tmp_path / new["audio_file"]).exists()
    purge(cfg)
    assert list((tmp_path / "false_audio").iterdir()) == []


def test_no_speech_kept_as_clip_is_still_flagged(tmp_path):
    cfg = config(tmp_path)
    h = Harness(cfg, {40: 0.9}, record=RecordConfig(no_speech_timeout_s=1.0))
    h.recorder.keep_no_speech = True
    h.feed(80)
    h.close()
    (r,) = rows(tmp_path / "activations.sqlite3")
    assert (r["outcome"], r["likely_false"], r["clip_id"]) == ("kept", 1, h.clips[0].id)


def test_the_outbox_marks_clips_uploaded_through_the_plugin(tmp_path):
    h = Harness(config(tmp_path), {40: 0.9, 100: 0.9})
    h.feed(70, loud=set(range(41, 50)))
    h.plugin.mark_uploaded(h.clips[0].id)  # enqueued: written on the log's own thread
    h.feed(60, loud=set(range(101, 110)))
    second = h.clips[1].id
    h.plugin.mark_uploaded(second)  # perhaps before its row is written: it is remembered
    h.close()
    assert [r["outcome"] for r in rows(tmp_path / "activations.sqlite3")] == ["uploaded",
                                                                              "uploaded"]
