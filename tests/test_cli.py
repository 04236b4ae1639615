"""The command line as a person uses it: replay output, clean errors, clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio import synth
from tests.fixtures.audio import phrase
from tests.waiting import wait_for

EDGE = [sys.executable, "-m", "edge"]


def run_edge(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def placed(tmp_path_factory) -> tuple[Path, list[float]]:
    """A recording with "hey jarvis" ending at known times, each followed by a request."""
    parts, ends, t = [synth.silence(2.0)], [], 2.0
    for _ in range(3):
        hj = phrase("hey jarvis")
        parts += [hj, synth.silence(0.3), phrase("turn on the kitchen lights"),
                  synth.silence(4.0)]
        ends.append(t + len(hj) / 16000)
        t += (len(hj) + len(parts[-2])) / 16000 + 0.3 + 4.0
    path = tmp_path_factory.mktemp("placed") / "placed.wav"
    sf.write(str(path), synth.concat(parts), 16000, subtype="PCM_16")
    return path, ends


def test_replay_json_prints_only_json_lines_with_detections_and_clips(placed, tmp_path):
    path, ends = placed
    out = run_edge("replay", str(path), "--json", "--clips", str(tmp_path / "clips"))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    dets = [e for e in events if e["event"] == "detection"]
    clips = [e for e in events if e["event"] == "clip"]
    assert len(dets) == 3 and len(clips) == 3
    for d, end in zip(dets, ends, strict=True):
        assert d["model"] == "hey_jarvis" and d["score"] >= 0.5 and d["file"] == str(path)
        assert end - 0.3 <= d["t"] <= end + 0.5
    for c, end in zip(clips, ends, strict=True):
        assert c["reason"] == "silence" and c["start"] < end < c["end"]
        wav = Path(c["path"])
        assert wav.exists() and wav.with_suffix(".json").exists()
        meta = json.loads(wav.with_suffix(".json").read_text())
        assert meta["id"] == c["id"] and meta["reason"] == "silence"
        assert sf.info(str(wav)).samplerate == 16000


def test_replay_each_file_is_a_fresh_stream(placed):
    path, _ = placed
    out = run_edge("replay", str(path), str(path), "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    times = [e["t"] for e in events if e["event"] == "detection"]
    assert len(times) == 6 and times[:3] == times[3:]


def test_replay_threshold_and_model_options(placed):
    path, _ = placed
    out = run_edge("replay", str(path), "--json", "--model", "alexa", "--threshold", "0.5")
    assert out.returncode == 0
    assert [json.loads(line) for line in out.stdout.splitlines()] == []
    bad = run_edge("replay", str(path), "--threshold", "7")
    assert bad.returncode == 2 and "--threshold 7.0 is out of range" in bad.stderr


@pytest.mark.parametrize("content,message", [
    (b"this is not audio at all", "is not a readable audio file"),
    (None, "is truncated"),
])
def test_replay_bad_file_is_a_clear_error_without_traceback(tmp_path, content, message):
    bad = tmp_path / "bad.wav"
    if content is None:
        sf.write(str(tmp_path / "full.wav"), np.zeros(32000, np.int16), 16000)
        data = (tmp_path / "full.wav").read_bytes()
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    out = run_edge("replay", str(bad))
    assert out.returncode == 1
    assert str(bad) in out.stderr and message in out.stderr
    assert "Traceback" not in out.stderr


def test_config_error_names_the_key_without_traceback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[record]\nsilence_s = -1\n")
    out = run_edge("replay", "x.wav", "--config", str(cfg))
    assert out.returncode == 2
    assert "record.silence_s = -1" in out.stderr and "Traceback" not in out.stderr


def test_missing_model_error_names_the_fetch_command(tmp_path):
    out = run_edge("replay", "x.wav", env={**os.environ, "EDGE_MODELS_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "edge models fetch" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_on_signal_and_keeps_finished_clips(placed, tmp_path, sig):
    path, _ = placed
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    proc = subprocess.Popen([*EDGE, "run", "--config", str(cfg), "--input", str(path),
                             "--realtime"], stderr=subprocess.PIPE, text=True)
    clips = tmp_path / "state" / "clips"
    # wait for the first clip: the daemon is mid-stream
    wait_for(lambda: list(clips.glob("*.json")), 60, "the first clip", poll_s=0.1)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    stop_latency = time.monotonic() - sent
    assert proc.returncode == 0, err
    assert "stopped:" in err and "Traceback" not in err
    print(f"stopped {stop_latency:.3f} s after {sig.name}")
    assert len(list(clips.glob("*.wav"))) == len(list(clips.glob("*.json"))) >= 1


def test_without_the_demo_flag_a_missing_device_is_an_error_not_a_demo(alsa, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    out = run_edge("run", "--config", str(cfg), env=alsa.env)
    assert out.returncode == 2
    assert "DEMO" not in out.stderr and "no capture device" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "clips").exists() or \
        not list((tmp_path / "state" / "clips").iterdir())


def test_engine_openwakeword_runs_the_upstream_package_behind_the_same_interface(
        placed, tmp_path):
    path, _ = placed
    ours = run_edge("replay", str(path), "--json")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[wake]\nengine = "openwakeword"\n')
    theirs = run_edge("replay", str(path), "--json", "--config", str(cfg))
    assert theirs.returncode == 0, theirs.stderr

    def dets(out: subprocess.CompletedProcess[str]) -> list[tuple[str, float]]:
        return [(e["model"], e["t"]) for e in map(json.loads, out.stdout.splitlines())
                if e["event"] == "detection"]

    assert len(dets(ours)) == 3
    assert dets(theirs) == dets(ours)


def test_dashboard_on_a_busy_port_is_a_one_line_error():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_edge("dashboard", "--broker", "mqtt://127.0.0.1:1", "--port", str(port))
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("host", ["a..b", "x" * 70 + ".com"])
def test_a_broker_host_that_is_not_a_valid_name_is_a_one_line_error(host):
    out = run_edge("simulate-fleet", "--broker", f"mqtt://{host}", "--duration", "1")
    assert out.returncode == 2
    assert "has a host name that is not valid" in out.stderr and "Traceback" not in out.stderr
