"""A streamed turn in the owner's records: the activation log's outcome ``streamed`` with its
destination, and one INFO line in the activity log (metadata only)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from edge.activations.schema import _SCHEMA, SCHEMA_VERSION, connect
from edge.activations.store import ActivationLog, db_path
from edge.pipeline.events import ActivationEnded, RecordingStopped, TurnStreamed
from tests.assist_helpers import Satellite
from tests.fakes import HeldSource
from tests.test_assist_esphome import HomeAssistant, events, make_satellite, voice_subscribed
from tests.waiting import wait_for

__all__ = ["make_satellite"]  # the fixture


def activations(sat: Satellite) -> list[dict[str, object]]:
    sat.stop()  # the activation log writes its last rows as the daemon closes
    with ActivationLog.open(db_path(sat.cfg), create=False) as store:
        return store.rows()


def test_a_streamed_turn_is_an_activation_streamed_to_its_destination(make_satellite, caplog):
    caplog.set_level(logging.INFO, logger="edge.service.activity")
    sat = make_satellite()

    async def home_assistant() -> HomeAssistant:
        ha = await voice_subscribed(sat)
        sat.run()
        await asyncio.wait_for(_stopped(ha), 60)
        await ha.client.disconnect()
        return ha

    ha = asyncio.run(home_assistant())
    [turn] = events(sat, TurnStreamed)
    wait_for(lambda: sat.events.of(ActivationEnded), what="the activation's end")
    sending, delivered = sat.ledger()
    assert turn.destination == sending["destination"]
    assert turn.bytes == delivered["bytes"] == len(ha.samples) * 2
    assert turn.ended_by == "vad" and turn.wake_word == "hey_jarvis"
    [line] = wait_for(lambda: [r for r in caplog.records if "streamed to" in r.getMessage()],
                      what="the activity log's line")
    assert line.levelno == logging.INFO
    assert line.getMessage() == (f"activation {turn.activation_id[:8]}: {turn.seconds:.2f} s "
                                 f"of audio ({turn.bytes} bytes) streamed to "
                                 f"{turn.destination}, ended by vad")
    assert line.journal["EDGE_EVENT"] == "assist"
    [row] = activations(sat)
    assert row["id"] == turn.activation_id
    assert row["outcome"] == "streamed" and row["streamed_to"] == turn.destination


async def _stopped(ha: HomeAssistant) -> None:
    while not ha.stops:
        await asyncio.sleep(0.01)


def test_a_wake_with_no_assistant_connected_is_not_streamed(make_satellite):
    sat = make_satellite()
    sat.run()
    wait_for(lambda: sat.events.of(RecordingStopped), what="the recording to end")
    wait_for(lambda: sat.events.of(ActivationEnded), what="the activation's end")
    assert not sat.events.of(TurnStreamed)
    [row] = activations(sat)
    assert row["outcome"] != "streamed" and row["streamed_to"] is None


def test_a_version_1_log_is_upgraded_keeping_its_rows_and_labels(tmp_path):
    path = tmp_path / "activations.sqlite3"
    v1 = _SCHEMA.replace(", 'streamed', 'transcribed')", ")") \
        .replace(",\n    streamed_to TEXT,\n    transcript_chars INTEGER,\n    transcript TEXT", "")
    assert "streamed" not in v1
    old = sqlite3.connect(path)
    old.executescript(v1 + "PRAGMA user_version = 1;")
    old.execute("INSERT INTO activations (id, wall_time, model, threshold, peak_score, "
                "frames_over, duration_s, vad_speech_ratio, end_reason, outcome, "
                "likely_false) VALUES ('a1', 1.0, 'hey_jarvis', 0.5, 0.9, 3, 2.0, 0.5, "
                "'silence', 'kept', 0)")
    old.execute("INSERT INTO labels (activation_id, label, source, wall_time) "
                "VALUES ('a1', 'true', 'cli', 2.0)")
    old.commit()
    old.close()
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("INSERT INTO activations (id, wall_time, model, threshold, peak_score, "
                     "frames_over, duration_s, vad_speech_ratio, end_reason, outcome, "
                     "likely_false, streamed_to) VALUES ('a2', 3.0, 'hey_jarvis', 0.5, 0.9, "
                     "3, 2.0, 0.5, 'silence', 'streamed', 0, 'esphome://192.0.2.7:1')")
        rows = conn.execute("SELECT id, outcome, streamed_to FROM activations ORDER BY n")
        assert rows.fetchall() == [("a1", "kept", None),
                                   ("a2", "streamed", "esphome://192.0.2.7:1")]
        assert conn.execute("SELECT activation_id FROM labels").fetchall() == [("a1",)]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                               "type = 'index' AND tbl_name = 'activations'")}
        assert {"activations_time", "activations_clip"} <= indexes
    finally:
        conn.close()


def test_false_wakes_today_counts_from_the_log_then_live(make_satellite, tmp_path):
    """The sensor starts from today's false activations in the log (a restart keeps the
    count) and counts each false one as it ends (a wake with no speech after it)."""
    from aioesphomeapi import SensorState

    from edge.activations.rows import ActivationRow
    from edge.assist.session import FALSE_WAKES_KEY
    from edge.audio import synth
    from tests.fixtures.audio import phrase
    from tests.test_assist_esphome import config, connected, until

    cfg = config(tmp_path)
    with ActivationLog.open(db_path(cfg)) as store:  # one false wake this morning, one true
        for n, likely_false in ((1, True), (2, False)):
            store.record(ActivationRow(
                id=f"a{n}", wall_time=time.time() - n, model="hey_jarvis", threshold=0.5,
                peak_score=0.9, frames_over=3, clip_id=None, duration_s=2.0,
                vad_speech_ratio=0.0, end_reason="no_speech" if likely_false else "silence",
                outcome="discarded", likely_false=likely_false))
    no_speech = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(9.0)])
    sat = make_satellite(HeldSource(no_speech))
    assert sat.cfg.state_dir == cfg.state_dir

    async def home_assistant() -> list[float]:
        client = await connected(sat, sat.key)
        states: list[float] = []
        def keep(state: object) -> None:
            if isinstance(state, SensorState) and state.key == FALSE_WAKES_KEY:
                states.append(state.state)

        client.subscribe_states(keep)
        await until(lambda: states, "the sensor's state")
        sat.run()
        await until(lambda: len(states) == 2, "the false wake to be counted")
        await client.disconnect()
        return states

    assert asyncio.run(home_assistant()) == [1.0, 2.0]
    [ended] = sat.events.of(ActivationEnded)
    assert ended.reason == "no_speech" and ended.likely_false
