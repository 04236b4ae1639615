"""Inputs that once gave a traceback (or no answer) now give one line saying what is wrong:
ages and dates beyond what a clock can show, digits of other scripts, numbers too big to
convert, a config nested thousands deep, a NUL in a path. Each through the real ``edge``
command in a subprocess; the MQTT side is in tests/test_mqtt_hostile_commands.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edge.activations.rows import LAST_TIME, parse_since
from edge.activations.store import ActivationLog
from edge.errors import UsageError
from tests.activation_helpers import row

EDGE = [sys.executable, "-m", "edge"]
T0 = 1_714_521_600.0


def edge(tmp: Path, *args: str) -> tuple[int, str]:
    env = {"HOME": str(tmp), "STATE_DIRECTORY": str(tmp / "state"), "PATH": ""}
    out = subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), out.stderr
    return out.returncode, lines[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "activations.sqlite3"
    with ActivationLog.open(path) as log:
        p = log.open_period(T0, {"hey_jarvis": 0.5}, heard_s=60.0, end_wall=T0 + 600,
                            end_reason="stopped")
        log.record(row("11111111-aaaa", wall_time=T0 + 60, model="hey_jarvis", period=p))
    return path


@pytest.mark.parametrize("since, says", [
    ("999999999d", "outside 1970 to 9999"),
    ("99999999999999h", "is not a date"),  # more digits than an age has
    ("0001-01-01", "outside 1970 to 9999"),
    ("9999-12-31T23:59-12:00", "outside 1970 to 9999"),
    ("\u00b2d", "is not a date"),
    ("\u0661\u0662d", "is not a date"),  # Arabic-Indic 12: int() would take it
    ("\uff12\uff10\uff12\uff14-01-01", "is not a date"),  # full-width digits
])
def test_stats_and_log_refuse_a_since_no_clock_can_show_in_one_line(
        tmp_path: Path, db: Path, since: str, says: str) -> None:
    for command in ("stats", "log"):
        code, line = edge(tmp_path, command, "--db", str(db), "--since", since)
        assert code == 2 and line.startswith("edge: error: --since") and says in line


@pytest.mark.parametrize("ref", ["\u00b2", "\u0661", "\u00b9\u00b2\u00b3", "9" * 19,
                                 "9" * 400, "\uff11"])
def test_label_refuses_a_number_it_cannot_look_up_in_one_line(
        tmp_path: Path, db: Path, ref: str) -> None:
    code, line = edge(tmp_path, "label", ref, "false", "--db", str(db))
    assert code == 2 or "no activation" in line
    assert "activation" in line and len(line) < 300


def test_log_refuses_a_limit_sqlite_cannot_hold_in_one_line(tmp_path: Path, db: Path) -> None:
    code, line = edge(tmp_path, "log", "--db", str(db), "--limit", "9" * 30)
    assert code == 2 and "--limit" in line and "at most" in line


@pytest.mark.parametrize("text, says", [
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nests arrays or tables too deeply"),
    ("a = " + "{b = " * 5000 + "1" + "}" * 5000 + "\n", "nests arrays or tables too deeply"),
    ("[wake]\nthreshold = " + "9" * 400 + "\n", "wake.threshold = 99"),
    ("[record]\nsilence_s = -" + "9" * 400 + "\n", "record.silence_s = -99"),
    ('state_dir = "/tmp/a\\u0000b"\n', "state_dir holds a NUL"),
    ('[output]\nclips_dir = "c\\u0000"\n', "output.clips_dir holds a NUL"),
    ('[activations]\ndb = "x\\u0000.sqlite3"\n', "activations.db holds a NUL"),
    ('[mqtt]\npassword_file = "p\\u0000"\n', "mqtt.password_file holds a NUL"),
    ('[upload.https]\nca = "ca\\u0000.pem"\n', "upload.https.ca holds a NUL"),
    ('[wake]\nmodels_dir = "m\\u0000"\n', "wake.models_dir holds a NUL"),
    ('[wake]\nmodels = ["m\\u0000.onnx"]\n', "wake.models holds a NUL"),
])
def test_config_check_and_run_refuse_what_would_crash_later_in_one_line(
        tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    for args in (("config", "check", str(path)), ("run", "--config", str(path))):
        code, line = edge(tmp_path, *args)
        assert code == 2 and says in line and len(line) < 400, line


@given(text=st.text(max_size=30) | st.from_regex(r"[0-9\u00b2\u0660-\u0669.]{1,20}[dhm]",
                                                  fullmatch=True))
@example(text="999999999d")
@example(text="9999-12-31T23:59:59-23:59")
@example(text="0000-01-01")
def test_since_is_a_time_the_log_can_hold_or_a_one_line_refusal(text: str) -> None:
    try:
        at = parse_since(text, now=T0)
    except UsageError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
    else:
        assert 0 <= at <= LAST_TIME and math.isfinite(at)
