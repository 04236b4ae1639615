"""The daemon says what it does: one INFO line per detection, per activation's end (clip kept
or discarded), per upload and per mute change; never audio, never words heard. `-v` and
`-q` work before or after any subcommand and win over the config's `log_level`."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.audio.sources import ArraySource
from edge.cli import build_parser
from tests.device import build
from tests.fakes import HeldSource
from tests.fixtures.audio import phrase
from tests.fixtures.wake import wake_stream, write_wake_wav
from tests.upload_helpers import upload_cfg
from tests.waiting import wait_for

ACTIVITY = "edge.service.activity"
REQUEST = "what is the time"


def run(tmp: Path, *args: str, config: str = "") -> list[str]:
    """`edge ... run --config C --input WAV` in a fresh process: its stderr lines."""
    path = tmp / "edge.toml"
    path.write_text(f'state_dir = "{tmp / "state"}"\n{config}')
    wav = write_wake_wav(tmp / "wake.wav", 8.0, request=REQUEST)
    argv = [a if a != "RUN" else "run" for a in args] or ["run"]
    proc = subprocess.run([sys.executable, "-m", "edge", *argv, "--config", str(path),
                           "--input", str(wav)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.splitlines()


def activity(lines: list[str], level: str = "INFO") -> list[str]:
    return [line.split(f"{ACTIVITY}: ", 1)[1] for line in lines
            if f" {level} {ACTIVITY}: " in line]


def test_a_run_logs_its_detection_and_its_kept_clip_once_each(tmp_path: Path) -> None:
    lines = activity(run(tmp_path))
    [heard, ended] = lines
    assert heard.startswith("heard hey_jarvis (score 0.") and "threshold 0.50" in heard
    assert "ended (silence" in ended and ", peak 0." in ended
    assert ended.endswith(f"kept in {tmp_path / 'state' / 'clips'}")
    assert all(REQUEST not in line and "array" not in line for line in lines)


def test_a_run_says_once_how_long_it_took_to_score_its_first_frame(tmp_path: Path) -> None:
    import re

    first = [line for line in run(tmp_path) if "edge.service.startup: " in line]
    [line] = first
    m = re.search(r"INFO edge\.service\.startup: first frame scored (\d+\.\d\d) s after the "
                  r"process started$", line)
    assert m is not None, line
    assert 0.0 < float(m.group(1)) < 60.0  # this process's own age, as the kernel counts it


def test_a_wake_with_nothing_said_after_it_logs_its_audio_discarded(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    wav = write_wake_wav(tmp_path / "wake_only.wav", 8.0)
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(path),
                           "--input", str(wav)], capture_output=True, text=True, timeout=120)
    [_heard, ended] = activity(proc.stderr.splitlines())
    assert "ended (no_speech" in ended and ended.endswith("its audio discarded")


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_hides_the_info_lines_before_or_after_the_subcommand(tmp_path: Path,
                                                                   where: str) -> None:
    args = ["-q", "RUN"] if where == "before" else ["RUN", "-q"]
    lines = run(tmp_path, *args)
    assert activity(lines) == [] and not any(" INFO " in line for line in lines)


def test_verbose_wins_over_the_configs_level(tmp_path: Path) -> None:
    assert activity(run(tmp_path, config='log_level = "warning"\n')) == []
    lines = run(tmp_path, "RUN", "-v", config='log_level = "warning"\n'
                                              '[log_levels]\n"edge.service" = "error"\n')
    assert len(activity(lines)) == 2
    assert any("over its threshold for" in line for line in activity(lines, "DEBUG"))


def test_every_subcommand_takes_v_and_q_before_and_after_its_name() -> None:
    parser = build_parser()

    def walk(p: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.ArgumentParser]]:
        out = [(name, p)]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    out += walk(sub, f"{name} {sub_name}")
        return out

    parsers = walk(parser, "edge")
    assert len(parsers) > 17
    for name, p in parsers:
        flags = p._option_string_actions
        assert {"-v", "-q"} <= set(flags), name
        assert flags["-v"].dest == flags["-q"].dest == "log_flag", name
    assert parser.parse_args(["-v", "config", "check", "x.toml"]).log_flag == "debug"
    assert parser.parse_args(["config", "check", "-q", "x.toml"]).log_flag == "warning"
    assert parser.parse_args(["-v", "config", "check", "x.toml", "-q"]).log_flag == "warning"
    assert parser.parse_args(["config", "check", "x.toml"]).log_flag is None
    # measure's own --quiet (no progress bar) stays its own
    args = parser.parse_args(["measure", "--quiet", "negatives/"])
    assert args.quiet is True and args.log_flag is None


def test_a_mute_and_an_unmute_each_log_one_line(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger=ACTIVITY)
    cfg = upload_cfg(tmp_path / "state")
    source = HeldSource(wake_stream(2.0))
    device = build(cfg, source)
    daemon = device.daemon
    loop = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    loop.start()
    try:
        assert device.hardware.soft_mute_soon(True, "test").result(10)[0] is True
        assert device.hardware.soft_mute_soon(False, "test").result(10)[0] is False
    finally:
        source.release.set()
        loop.join(30)
    mutes = [r.getMessage() for r in caplog.records
             if r.name == ACTIVITY and r.getMessage().startswith(("muted", "unmuted"))]
    assert len(mutes) == 2, mutes
    assert mutes[0].startswith("muted (soft)") and mutes[1].startswith("unmuted")
    assert [r.journal["EDGE_EVENT"] for r in caplog.records  # type: ignore[attr-defined]
            if r.name == ACTIVITY and r.getMessage() in mutes] == ["mute", "mute"]


def test_each_upload_logs_one_line(tmp_path: Path, https_receiver: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger=ACTIVITY)
    rx = https_receiver()
    cfg = upload_cfg(tmp_path / "state", "https", https={"url": rx.url, "ca": str(rx.ca_path)})
    gap = np.zeros(16000, np.int16)
    audio = np.concatenate([gap, phrase("hey jarvis"), gap[:4000], phrase(REQUEST), gap, gap])
    build(cfg, ArraySource(audio), upload_drain_s=20).daemon.run(install_signals=False)
    wait_for(lambda: len(rx.ok_bodies()) == 1, 10, "the upload")
    messages = [r.getMessage() for r in caplog.records if r.name == ACTIVITY]
    [clip_id] = list(rx.ok_bodies())
    uploads = [m for m in messages if " uploaded to " in m]
    destination = device_destination(rx.url)
    assert uploads == [f"clip {clip_id[:8]} uploaded to {destination}"], messages
    [ended] = [m for m in messages if " ended (" in m]
    assert ended.endswith(f"queued for upload to {destination}")


def device_destination(url: str) -> str:
    """What the uploader names a receiver by: its scheme, host and port."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_the_process_age_reads_the_kernels_start_time_whatever_the_command_name(
        tmp_path: Path) -> None:
    import os
    import time

    from edge.service.startup import process_age_s

    ticks = os.sysconf("SC_CLK_TCK")
    boot_s = time.clock_gettime(time.CLOCK_BOOTTIME)
    start = int((boot_s - 5.0) * ticks)  # started five seconds ago
    rest = " ".join(["0"] * 18)  # fields 3..21 (state and the rest), then 22: starttime
    stat = tmp_path / "stat"
    stat.write_text(f"4242 (edge (odd) name) S {rest} {start} 0 0\n")
    assert process_age_s(str(stat)) == pytest.approx(5.0, abs=0.1)
    assert 0.0 < process_age_s() < 600.0  # this test's own process
    assert process_age_s(str(tmp_path / "missing")) is None
