"""The soak, short: 15 minutes of audio through the live daemon (bench/soak.py, which
`make soak` runs for 24 hours), in its own process so nothing else moves its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_fifteen_minutes_of_audio_hold_memory_fds_and_threads_flat(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--hours", "0.25", "--out", str(out),
         "--restart-every", "240", "--mute-every", "150", "--sample-every", "30",
         "--warmup", "120"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    r = json.loads(out.read_text())
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert r["pass"] is True
    assert r["hours_of_audio"] == 0.25
    assert r["broker_restarts"] >= 3 and r["mute_toggles"] >= 5
    assert r["clips"] >= 10 and r["received_by_broker_subscriber"] >= r["clips"]
    assert r["left_in_outbox"] == 0
    assert r["rss_growth_kb"] < 5 * 1024
    assert r["fd_growth"] <= 0 and r["thread_growth"] <= 0 and r["os_thread_growth"] <= 0
    assert len(r["samples"]) >= 10
