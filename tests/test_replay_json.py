"""`edge replay --json` tells the end of every activation, kept or not: a `clip` event with
its reason, whether it was kept, its path (null when the audio was discarded) and its peak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.cli import main as edge
from tests.fixtures.wake import write_wake_wav


def replay(capsys: Any, *args: str) -> list[dict[str, Any]]:
    assert edge(["replay", "--json", *args]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


def test_a_wake_with_no_request_ends_in_a_discarded_clip_event(tmp_path: Path,
                                                                capsys: Any) -> None:
    wav = write_wake_wav(tmp_path / "wake_only.wav", 8.0)
    clips = tmp_path / "clips"
    events = replay(capsys, str(wav), "--clips", str(clips))
    assert [e["event"] for e in events] == ["detection", "clip"]
    detection, end = events
    assert detection["started_clip"]
    assert end["reason"] == "no_speech" and end["kept"] is False
    assert end["path"] is None and end["id"] is None
    assert end["t"] == detection["t"] and end["model"] == detection["model"] == "hey_jarvis"
    assert end["peak"] >= detection["score"] and end["duration_s"] > 0
    assert not list(clips.iterdir())  # nothing was written for it


def test_a_kept_clip_event_names_its_file_and_every_started_activation_ends(
        tmp_path: Path, capsys: Any) -> None:
    kept = write_wake_wav(tmp_path / "request.wav", 8.0, request="what is the time")
    discarded = write_wake_wav(tmp_path / "wake_only.wav", 8.0)
    clips = tmp_path / "clips"
    events = replay(capsys, str(kept), str(discarded), "--clips", str(clips))
    started = [e for e in events if e["event"] == "detection" and e["started_clip"]]
    ends = [e for e in events if e["event"] == "clip"]
    assert [e["file"] for e in ends] == [e["file"] for e in started] == [str(kept),
                                                                          str(discarded)]
    first, second = ends
    assert first["kept"] is True and first["reason"] == "silence"
    assert first["path"] == str(clips / f"{first['id']}.wav") and Path(first["path"]).exists()
    assert first["start"] < first["t"] < first["end"]
    assert second["kept"] is False and second["path"] is None and second["start"] is None
    assert len({e["activation_id"] for e in ends}) == 2


def test_without_clips_a_kept_clip_has_no_path_but_is_kept(tmp_path: Path, capsys: Any) -> None:
    wav = write_wake_wav(tmp_path / "request.wav", 8.0, request="what is the time")
    [end] = [e for e in replay(capsys, str(wav)) if e["event"] == "clip"]
    assert end["kept"] is True and end["path"] is None and end["id"]


def test_the_text_output_tells_a_discarded_activation_too(tmp_path: Path, capsys: Any) -> None:
    wav = write_wake_wav(tmp_path / "wake_only.wav", 8.0)
    assert edge(["replay", str(wav)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "detection hey_jarvis" in lines[0]
    assert "activation discarded (no_speech, peak " in lines[1]
