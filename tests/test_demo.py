"""`make run`'s demo: the full pipeline on synthesized speech, kept out of the owner's data.

ALSA is configured with no capture device (tests/fixtures/alsa.py), as on a machine with no
microphone, so `edge run --demo-if-no-device` runs the demo.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.commands.run import DEMO_MARK, demo_config, demo_state_path
from edge.config import Config, replace

EDGE = [sys.executable, "-m", "edge"]


def demo(state: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cfg = state.parent / "c.toml"
    cfg.write_text(f'state_dir = "{state}"\n')
    return subprocess.run([*EDGE, "run", "--config", str(cfg), "--demo-if-no-device"],
                          capture_output=True, text=True, timeout=300, env=env)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_the_demo_runs_the_full_pipeline_with_a_loud_notice(alsa, tmp_path):
    out = demo(tmp_path / "state", alsa.env)
    assert out.returncode == 0, out.stderr
    assert "DEMO MODE: no capture device was found" in out.stderr
    clips = tmp_path / "state-demo" / "clips"
    metas = [json.loads(p.read_text()) for p in clips.glob("*.json")]
    assert len(metas) == 1
    assert metas[0]["model"] == "hey_jarvis" and metas[0]["reason"] == "silence"


def test_the_demo_never_touches_the_owners_state(alsa, tmp_path):
    state = tmp_path / "state"
    (state / "clips").mkdir(parents=True)
    (state / "clips" / "mine.wav").write_bytes(b"the owner's clip")
    (state / "device_id").write_text("0123456789abcdef\n")
    before = files_under(state)
    for _ in range(2):
        out = demo(state, alsa.env)
        assert out.returncode == 0, out.stderr
    assert files_under(state) == before  # no clip, no activation log, no lock, nothing
    # two demos leave one clip: each starts from a fresh folder of its own
    assert len(list((tmp_path / "state-demo" / "clips").glob("*.wav"))) == 1
    stats = subprocess.run([*EDGE, "stats"], capture_output=True, text=True, timeout=120,
                           env={**alsa.env, "STATE_DIRECTORY": str(state)})
    assert "there is no activation log" in stats.stderr  # the demo's wake is not counted


def test_the_demo_says_where_its_clip_went_and_what_to_try_next(alsa, tmp_path):
    out = demo(tmp_path / "state", alsa.env)
    assert out.returncode == 0, out.stderr
    [clip] = (tmp_path / "state-demo" / "clips").glob("*.wav")
    assert f"aplay {clip}" in out.stdout
    assert f"{tmp_path / 'state-demo'}/ (replaced by the next" in out.stdout
    assert f"Its clip and log go to {tmp_path / 'state-demo'}/" in out.stderr
    for command in ("edge devices", "edge run", "edge log", "edge stats"):
        assert f"\n  {command} " in out.stdout
    assert "Your first hour" in out.stdout


def test_a_folder_the_demo_did_not_make_is_refused_in_one_line(alsa, tmp_path):
    foreign = tmp_path / "state-demo"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone's notes")
    out = demo(tmp_path / "state", alsa.env)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        f"edge: error: the demo's state folder {foreign} holds files the demo did not make; "
        "move it away, or set state_dir to another folder")
    assert (foreign / "notes.txt").read_text() == "someone's notes"


def test_the_demo_sends_nothing_and_keeps_its_clip_as_plain_wav(tmp_path):
    cfg = replace(Config(), state_dir=str(tmp_path / "state"))
    cfg = replace(cfg, output=replace(cfg.output, keep_local=False, clips_dir="/elsewhere"),
                  upload=replace(cfg.upload, mode="https", encrypt_to="x"),
                  mqtt=replace(cfg.mqtt, enabled=True))
    d = demo_config(cfg)
    assert d.state_path == demo_state_path(cfg) == tmp_path / "state-demo"
    assert (d.state_path / DEMO_MARK).exists()
    assert d.upload.mode == "off" and d.upload.encrypt_to == "" and not d.mqtt.enabled
    assert d.output.keep_local and d.under_state(d.output.clips_dir) == d.state_path / "clips"
